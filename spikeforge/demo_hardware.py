"""The hardware half of the demo: the flow's generate and verify (and, with a board, build) steps with the
demo's settings."""

from __future__ import annotations

from spikeforge.flow import FlowConfig, FlowReport

__all__ = ["DEMO_LANES_BUDGET", "hardware_config", "board_config", "hardware_report"]

#: Lanes in total for the demo design (issue 3: <= 48 lanes, balanced automatically).
DEMO_LANES_BUDGET = 48


def hardware_config(config: FlowConfig) -> FlowConfig:
    """The demo's generate/verify settings: <= 48 lanes balanced on the spikes the whole test split
    measures, membrane banks as the generator chooses, every test sample signed off."""
    return config.replace(lanes_budget=DEMO_LANES_BUDGET, spikes_from=config.dataset, spike_samples=None,
                          samples=None, split="test")


def board_config(config: FlowConfig) -> FlowConfig:
    """The demo's build settings: the board's own default folding (one lane per layer on iCE40, the
    fewest block RAMs and LUTs; automatic elsewhere), not the simulation's 48-lane budget, which is
    for speed, not for a small FPGA."""
    return config.replace(lanes=None, lanes_budget=None)


def hardware_report(flow: FlowReport) -> dict:
    """The ``design`` and ``verification`` entries of the demo's report.json from the flow's reports."""
    report = {}
    names = [name for name, _, _ in flow.steps]
    if "generate" in names:
        design = flow["generate"]
        report["design"] = {"path": design.rtl_dir, "folding": design.folding, "predicted": design.prediction}
    if "build" in names:
        build = flow["build"]
        details = build.details
        report["board"] = {"board": build.board, "path": build.board_dir, "status": build.status,
                           "device": build.device, "fmax_mhz": build.fmax_mhz,
                           "timing_met": details.get("timing_met"), "folding": details.get("folding"),
                           "membrane_banks": build.membrane_banks, "synthesis": details.get("synthesis"),
                           "samples_per_second": details.get("samples_per_second")}
    if "verify" in names:
        verification = flow["verify"]
        report["verification"] = {key: value for key, value in verification.to_json().items()
                                  if key in ("ok", "samples", "checked", "mismatches", "accuracy", "golden_accuracy",
                                             "timing", "model_agreement", "simulation")}
    return report
