"""Published FPGA designs to put beside ours: numbers as their papers state them, with what differs.

Only figures stated in the cited abstracts are used; where a paper's device or clock is not in its
abstract it says so rather than guessing.
"""

from __future__ import annotations

__all__ = ["PUBLISHED"]

PUBLISHED = (
    {"name": "Spiker+", "cite": "Carpegna, Savino, Di Carlo, arXiv 2401.01141 (2024)",
     "network": "fully connected LIF SNN", "dataset": "MNIST", "accuracy": 93.85, "us_per_sample": 780.0,
     "logic": "7,612 logic cells", "luts": 7612, "bram": "18 BRAM", "power": "180 mW",
     "device": "Xilinx FPGA (device and clock: see the paper)",
     "differs": "MNIST not Fashion-MNIST (Fashion-MNIST is harder: our float 784-128-10 reaches ~88 %); "
                "clock-driven LIF, rate-style multi-step inference; Xilinx logic cells (LUT6) vs. ECP5 LUT4"},
    {"name": "Flexi-NeurA", "cite": "Farahani, Roshanshah, Safari, arXiv 2602.18140v1 (2026)",
     "network": "256-128-10 LIF, two cores", "dataset": "MNIST", "accuracy": 97.23, "us_per_sample": 1100.0,
     "logic": "1,623 logic cells", "luts": 1623, "bram": "7 BRAM", "power": "111 mW",
     "device": "FPGA (device and clock: see the paper)",
     "differs": "MNIST with a 256-input network (downsampled input), time-multiplexed cores: far fewer "
                "logic cells, ~14× slower than Spiker+'s target; a later revision of the abstract states 96.23 %"},
    {"name": "Fan & Levy", "cite": "Fan, Levy, arXiv 2507.07284 (2025)",
     "network": "fully connected SNN on a tiled synaptic array", "dataset": "MNIST", "accuracy": None,
     "us_per_sample": 520.0, "logic": "6,358 LUT", "luts": 6358, "bram": "40.5 BRAM", "power": None,
     "device": "Xilinx Artix-7 at 100 MHz",
     "differs": "MNIST; Artix-7 LUT6 at 100 MHz; a general any-to-any architecture rather than a per-network pipeline"},
    {"name": "FINN SFC-max", "cite": "Umuroglu et al., FINN, FPGA 2017, arXiv 1612.07119",
     "network": "binarized MLP (3 × 256 hidden)", "dataset": "MNIST", "accuracy": 95.8, "us_per_sample": 1 / 12.3,
     "logic": "(see the paper)", "luts": None, "bram": "(see the paper)", "power": "< 25 W system",
     "device": "Xilinx ZC706 (Zynq-7045)",
     "differs": "not a spiking network: 1-bit weights and activations, fully unrolled dataflow on a large "
                "Zynq; 0.31 µs latency, 12.3 M samples/s throughput. FINN's TFC examples (3 × 64) are "
                "smaller still; their figures are not restated here"},
)
