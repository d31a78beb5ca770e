"""`spikeforge flow`: run the named steps of :mod:`spikeforge.flow` from a JSON configuration."""

from __future__ import annotations

from pathlib import Path

NAME = "flow"
HELP = ("run the flow's named steps (convert, generate, verify, build) from a JSON configuration; "
        "--start/--stop pick the steps")

#: The steps in flow order (spikeforge.flow.STEPS, which imports torch; checked against it in the tests).
STEP_NAMES = ("convert", "generate", "verify", "build")


def add_arguments(parser):
    parser.add_argument("config", type=Path, help="a JSON object of spikeforge.flow.FlowConfig keys")
    parser.add_argument("--start", default="convert", choices=STEP_NAMES, help="first step (convert)")
    parser.add_argument("--stop", default="verify", choices=STEP_NAMES, help="last step, included (verify)")
    parser.add_argument("-o", "--output", help="the output folder (overrides the configuration's)")


def run(args) -> int:
    # The flow imports torch (the converter) and amaranth (the generator): imported here so
    # `spikeforge --help` stays fast.
    from spikeforge.flow import FlowConfig, run_flow

    config = FlowConfig.load(args.config)
    if args.output is not None:
        config = config.replace(output=args.output)
    report = run_flow(config, start=args.start, stop=args.stop, log=lambda line: print(line, flush=True))
    print(f"wrote {config.report_path} ({len(report.steps)} step{'s' if len(report.steps) != 1 else ''} "
          f"in {report.seconds:.1f} s)")
    return 0 if report.ok else 1
