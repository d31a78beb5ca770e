"""The hardware steps of the demo: generate the Verilog, sign it off with Verilator."""

from __future__ import annotations

from pathlib import Path

from .progress import step

__all__ = ["run_hardware_steps", "DEMO_LANES_BUDGET"]

#: Lanes in total for the demo design (issue 3: <= 48 lanes, balanced automatically).
DEMO_LANES_BUDGET = 48


def run_hardware_steps(net, test, output: Path) -> dict:
    from .hdl.generate import generate, summary
    from spikeforge.ir import golden
    from .sim.signoff import format_report, verify

    report = {}
    rtl = output / "rtl"
    with step(f"4. generating the accelerator (Amaranth -> Verilog, <= {DEMO_LANES_BUDGET} lanes)"):
        spikes_in = [float(s.mean()) for s in golden.run(net, test.samples).input_spikes()]
        design = generate(net, rtl, lanes_budget=DEMO_LANES_BUDGET, spikes_in=spikes_in)
    print(summary(design))
    print(f"   wrote {rtl}/ ({design['verilog']}, rom/*.hex, design.json)")
    report["design"] = {"path": str(rtl), "folding": design["folding"],
                        "predicted": design.get("prediction")}

    print(f"5. verifying the RTL with Verilator on all {len(test)} test samples (cocotb; first run builds) ...",
          flush=True)
    verification = verify(net, rtl, test.samples, test.labels, build_root=output / "sim_build",
                          progress=lambda message: print(f"   {message}", flush=True))
    print(format_report(verification))
    report["verification"] = {key: verification.get(key) for key in
                              ("ok", "samples", "checked", "mismatches", "accuracy", "golden_accuracy", "timing",
                               "model_agreement", "simulation")}
    return report
