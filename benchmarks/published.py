"""Published FPGA designs to put beside ours: numbers as their papers state them, with what differs.

Only figures stated in the cited abstracts are used; where a paper's device or clock is not in its
abstract it says so rather than guessing.
"""

from __future__ import annotations

__all__ = ["PUBLISHED", "PUBLISHED_CNN", "SKYDIVER_SAMPLES_PER_SECOND"]

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

#: Skydiver's MNIST throughput (Chen et al., IEEE TCAD 2022): the yardstick of the conv rows.
SKYDIVER_SAMPLES_PER_SECOND = 22_600.0

#: Published convolutional accelerators on FPGAs (spiking, and one binarised CNN): throughput in samples
#: (frames) per second as the papers state it (each ``url`` is the abstract the figures were read from).
#: Where a paper's clock, resources or accuracy are not restated here it says "see the paper" rather than guessing.
PUBLISHED_CNN = (
    {"name": "Skydiver", "cite": "Chen, Gao, Fang, Luan, \"Skydiver: A Spiking Neural Network Accelerator Exploiting "
                                 "Spatio-Temporal Workload Balance\", IEEE TCAD 2022, arXiv 2203.07516",
     "url": "https://arxiv.org/abs/2203.07516",
     "network": "convolutional SNN", "dataset": "MNIST", "accuracy": 98.5, "samples_per_second": 22_600.0,
     "device": "Xilinx XC7Z045 (clock and resources: see the paper)",
     "differs": "a Zynq-7045 (218k LUT6, 545 BRAM36, 900 DSP) against our ECP5-85F (84k LUT4, 208 BRAM18, "
                "156 DSP); its own conversion and timestep count; MNIST: compare with our MNIST-5k row "
                "(our Fashion-MNIST row is a harder data set)"},
    {"name": "SyncNN", "cite": "Panchapakesan, Fang, Li, \"SyncNN: Evaluating and Accelerating Spiking Neural Networks "
                               "on FPGAs\", FPL 2021; ACM TRETS 2022, doi 10.1145/3514253",
     "url": "https://dl.acm.org/doi/10.1145/3514253",
     "network": "convolutional SNN (synchronous, quantised)", "dataset": "MNIST", "accuracy": 99.6,
     "samples_per_second": 13_086.0, "device": "Xilinx ZCU102 / ZCU104 (see the paper)",
     "differs": "Zynq UltraScale+ MPSoC boards, an order of magnitude more logic and block RAM than an ECP5-85F"},
    {"name": "Ju et al.", "cite": "Ju et al., \"An FPGA implementation of deep spiking neural networks for "
                                  "low-power and fast classification\", Neural Computation 32(1):182, 2020",
     "url": "https://direct.mit.edu/neco/article/32/1/182/95561",
     "network": "deep convolutional SNN", "dataset": "MNIST", "accuracy": 98.94, "samples_per_second": 164.0,
     "device": "Xilinx ZCU102 (Zynq UltraScale+) at 150 MHz",
     "differs": "Zynq UltraScale+ MPSoC; a converted deep CNN run over many timesteps"},
    {"name": "FINN CNV", "cite": "Umuroglu et al., FINN, FPGA 2017, arXiv 1612.07119",
     "url": "https://arxiv.org/abs/1612.07119",
     "network": "binarised CNN (CNV)", "dataset": "CIFAR-10", "accuracy": 80.1, "samples_per_second": 21_906.0,
     "device": "Xilinx ZC706 (Zynq-7045)",
     "differs": "not a spiking network: 1-bit weights and activations, a fully unrolled dataflow on a large Zynq; "
                "CIFAR-10 (3x32x32 colour images), a bigger network than ours"},
)
