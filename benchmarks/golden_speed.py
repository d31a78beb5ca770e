"""Speed of the golden model: samples per second of the closed form and of the literal timestep model.

The closed form on the digits network must reach 50,000 samples/s (what sign-off over whole test
splits and the accuracy sweeps rely on). One batch of N samples per call; best of 3 rounds.
"""

from __future__ import annotations

import numpy as np

from spikeforge.ir import golden
from spikeforge.reporting import fmt, markdown_table

from .accuracy_vs_timesteps import converted
from .common import NETWORKS, best_time, dataset, log

__all__ = ["measure", "render", "TARGET"]

#: Required closed-form samples/s on the digits network.
TARGET = 50_000


def measure(ctx) -> dict:
    cases = [("digits", 8, 100_000 if not ctx.quick else 10_000), ("digits", 4, 100_000 if not ctx.quick else 10_000),
             ("fmnist", 4, 10_000 if not ctx.quick else 2_000), ("fmnist", 8, 10_000 if not ctx.quick else 2_000),
             ("fmnist-deep", 8, 10_000 if not ctx.quick else 2_000)]
    rows = []
    cases = [case for case in cases if case[0] in ctx.networks]
    for key, T, count in cases:
        spec = NETWORKS[key]
        net = converted(ctx, key, T)
        test = dataset(spec.dataset, "test")
        samples = np.resize(test.samples, (count,) + test.samples.shape[1:])
        closed = best_time(lambda: golden.run(net, samples))
        literal_count = min(count, 2_000)
        literal = best_time(lambda: golden.run_timesteps(net, samples[:literal_count]), repeat=2)
        rows.append({"network": key, "sizes": spec.sizes, "timesteps": T, "batch": count,
                     "closed_form_samples_per_s": count / closed,
                     "literal_batch": literal_count, "literal_samples_per_s": literal_count / literal})
        log(f"golden speed: {key} T={T}: {count / closed:,.0f} samples/s closed form")
    digits = next((r for r in rows if r["network"] == "digits" and r["timesteps"] == 8), None)
    speed = digits["closed_form_samples_per_s"] if digits else None
    return {"rows": rows, "target": TARGET, "digits_samples_per_s": speed,
            "meets_target": None if speed is None else speed >= TARGET}


def render(result: dict, ctx, commands: str = "") -> str:
    verdict = ("not measured (digits not in this run)" if result["meets_target"] is None else
               f"**{fmt(result['digits_samples_per_s'], 0)} samples/s — {'met' if result['meets_target'] else 'NOT met'}**")
    lines = ["## 3a. Golden model speed", "",
             f"Closed form (`golden.run`, exact integer arithmetic through float BLAS) and literal timestep "
             f"model (`golden.run_timesteps`), one batch per call, best of 3. Target: ≥ {TARGET:,} samples/s "
             f"on digits (closed form): {verdict}.", ""]
    lines.append(markdown_table(
        ["network", "T", "batch", "closed form (samples/s)", "literal iLIF (samples/s)"],
        [[f"{r['network']} ({r['sizes']})", r["timesteps"], fmt(r["batch"]), fmt(r["closed_form_samples_per_s"], 0),
          fmt(r["literal_samples_per_s"], 0)] for r in result["rows"]]))
    lines.append("")
    return "\n".join(lines)


def summary_lines(result: dict) -> list:
    if result["digits_samples_per_s"] is None:
        return []
    return [f"golden closed form on digits: {result['digits_samples_per_s']:,.0f} samples/s "
            f"(target {result['target']:,}: {'met' if result['meets_target'] else 'NOT met'})"]
