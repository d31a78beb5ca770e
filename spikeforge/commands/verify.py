"""`spikeforge verify`: sign off the emitted Verilog against the golden model with cocotb + Verilator,
or run a whole split through the compiled Verilator engine (``--engine fast``, shardable on Dask)."""

from __future__ import annotations

import math
from pathlib import Path

from spikeforge.ir.errors import InputError

NAME = "verify"
HELP = "simulate the generated Verilog (cocotb + Verilator) on a dataset and compare every result bit-exactly"


def add_arguments(parser):
    parser.add_argument("network", type=Path, help="network directory written by `spikeforge convert`")
    parser.add_argument("--rtl", type=Path, required=True,
                        help="directory written by `spikeforge generate` (Verilog and design.json)")
    parser.add_argument("--dataset", default="digits", help="dataset name or MNIST-format directory (digits)")
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--samples", type=int, default=None, help="only the first N samples (default: all)")
    parser.add_argument("--stalls", choices=["none", "random"], default="none",
                        help="random: stream the samples again under seeded random input gaps and output "
                             "back-pressure of 25%%, 50%% and 90%% (default: none)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random stalls (1)")
    parser.add_argument("--waves", action="store_true", help="keep a waveform: <rtl>/signoff.fst (signoff.vcd where the lz4 headers FST needs are missing)")
    parser.add_argument("--report", type=Path, default=None, help="JSON report path (default <rtl>/verify.json)")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="where Verilator builds go, one folder per design (default <rtl>/sim_build)")
    parser.add_argument("--clock-mhz", type=float, default=100.0,
                        help="clock for the samples/s figure of the throughput (100)")
    parser.add_argument("--engine", choices=["cocotb", "fast"], default="cocotb",
                        help="cocotb: the sign-off (stalls, waves); fast: a compiled Verilator harness streams "
                             "the samples with no Python per cycle, no stalls (default: cocotb)")
    parser.add_argument("--shards", type=int, default=1,
                        help="--engine fast: split the samples into N simulations run on Dask workers (an "
                             "embedded local cluster of min(N, cores) processes unless --scheduler) (1)")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="--engine fast: run the shards on the Dask cluster of this running `dask scheduler`")


def run(args) -> int:
    # The flow imports torch (the converter) and amaranth (the generator): imported here so
    # `spikeforge --help` stays fast.
    from spikeforge.flow import FlowConfig, FlowState, run_step

    if args.samples is not None and args.samples < 1:
        raise InputError(f"--samples {args.samples} must be >= 1")
    if not (math.isfinite(args.clock_mhz) and args.clock_mhz > 0):
        raise InputError(f"--clock-mhz {args.clock_mhz} must be a finite frequency > 0")
    if args.shards < 1:
        raise InputError(f"--shards {args.shards} must be >= 1")
    if args.engine != "fast" and (args.shards != 1 or args.scheduler is not None):
        raise InputError(f"--shards/--scheduler need --engine fast (got --engine {args.engine}: the cocotb "
                         f"sign-off runs as one simulation)")
    if args.engine == "fast" and (args.stalls != "none" or args.waves):
        raise InputError("--engine fast streams without stalls or waves; drop --stalls/--waves or use --engine cocotb")
    build_dir = args.build_dir if args.build_dir is not None else args.rtl / "sim_build"
    config = FlowConfig(network_dir=str(args.network), rtl_dir=str(args.rtl), dataset=args.dataset,
                        split=args.split, samples=args.samples, stalls=args.stalls, seed=args.seed,
                        waves=args.waves, verify_report=None if args.report is None else str(args.report),
                        sim_build=str(build_dir), clock_mhz=args.clock_mhz, engine=args.engine,
                        shards=args.shards, scheduler=args.scheduler)
    # A missing or failing simulator is an ExternalToolError (exit 3); only a mismatch exits 1.
    report = run_step("verify", FlowState(log=lambda line: print(line, flush=True)), config)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
