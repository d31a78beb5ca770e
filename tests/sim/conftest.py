"""Fixtures of the cocotb + Verilator sign-off tests: the demo design, built once a session
(``signoff_build_root`` is in tests/conftest.py)."""

import pytest


@pytest.fixture(scope="session")
def digits_test():
    from spikeforge.datasets import load
    return load("digits", "test")


@pytest.fixture(scope="session")
def demo_net():
    from spikeforge.demo import demo_network
    return demo_network()


@pytest.fixture(scope="session")
def demo_rtl(demo_net, digits_test, tmp_path_factory):
    """The demo design: the demo network generated as `spikeforge demo` does (lanes budget, spike counts)."""
    from spikeforge.demo_hardware import DEMO_LANES_BUDGET
    from spikeforge.hdl.generate import generate
    from spikeforge.ir import golden
    spikes_in = [float(s.mean()) for s in golden.run(demo_net, digits_test.samples).input_spikes()]
    rtl = tmp_path_factory.mktemp("demo") / "rtl"
    generate(demo_net, rtl, lanes_budget=DEMO_LANES_BUDGET, spikes_in=spikes_in)
    return rtl


@pytest.fixture(scope="session")
def demo_signoff(demo_net, demo_rtl, digits_test, signoff_build_root):
    """Scenario 1's run, shared with the cycle-model check: the whole digits test split, no stalls."""
    from spikeforge.sim.signoff import format_report, verify
    report = verify(demo_net, demo_rtl, digits_test.samples, digits_test.labels, build_root=signoff_build_root,
                    report_path=False)
    print(format_report(report))
    return report
