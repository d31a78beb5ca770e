# amaranth: UnusedElaboratable=no
"""The AXI4-Stream top in Amaranth's simulator: handshake rules, reset, the tdata packing, bit-exact results."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment, Shape
from amaranth.sim import Simulator

from spikeforge.hdl import Accelerator
from spikeforge.hdl.axis import AXIS_PORTS, AXIStreamAccelerator, axis_layout_description, axis_result_layout
from spikeforge.ir import golden
from spikeforge.ir.network import DenseLayer, Network
from spikeforge.ir.random_network import random_network
from spikeforge.testing.hdl_harness import simulate_accelerator

PERIOD = 1e-8


def _net_with_negative_scores():
    """Scores of both signs (sign extension is visible) and ties (label rule)."""
    net = random_network(7, sizes=(6, 5, 4), timesteps=3, weight_bits=5)
    weight = net.output_layer.weight.copy()
    weight[2] = weight[0]
    weight[3] = -15
    layers = [net.layers[0], DenseLayer("fc2", weight, np.array([-40, -400, -40, -9]), 1, 0, 5, fires=False)]
    return Network(timesteps=3, input_shape=(6,), input_lut=net.input_lut, layers=layers, classes=list("abcd"))


def _samples(seed, n, features):
    samples = np.random.default_rng(seed).integers(0, 256, size=(n, features))
    samples[0] = 255
    return samples


def _run(dut, samples, *, gap=0.0, stall=0.0, seed=0, reset_after=None, reset_cycles=3, max_cycles=20000):
    """Drive ``samples`` into ``s_axis`` (random tvalid gaps), take ``m_axis`` (random tready back-pressure).

    With ``reset_after``: ``aresetn`` goes low once that many pixel beats were taken, then every sample is
    streamed again. Every cycle checks the AXI4-Stream rules on ``m_axis``: ``m_axis_tvalid`` reads the same
    with ``m_axis_tready`` low and high (no combinational path), a beat offered stays offered with the same
    ``m_axis_tdata`` until taken, ``m_axis_tlast`` is 1 with every beat; and during reset nothing is offered
    or taken. Returns ``(beats, cycles)``: the raw ``m_axis_tdata`` of each taken beat and its cycle.
    """
    flat = np.asarray(samples).reshape(len(samples), -1)
    beats = [(int(v), int(i == flat.shape[1] - 1)) for row in flat for i, v in enumerate(row)]
    state = {"taken_in": 0, "out": [], "in_reset": False, "sent_all": False, "cycles": 0,
             "out_cycles": []}
    expected_results = len(samples)

    async def clock(ctx):
        while True:
            ctx.set(dut.aclk, 1)
            await ctx.delay(PERIOD / 2)
            ctx.set(dut.aclk, 0)
            await ctx.delay(PERIOD / 2)

    async def driver(ctx):
        rng = random.Random(seed)
        ctx.set(dut.aresetn, 0)
        for _ in range(2):
            await ctx.posedge(dut.aclk)
        ctx.set(dut.aresetn, 1)
        queue = list(beats)
        while queue:
            while gap and rng.random() < gap:
                ctx.set(dut.s_axis_tvalid, 0)
                await ctx.posedge(dut.aclk)
            data, last = queue[0]
            ctx.set(dut.s_axis_tdata, data)
            ctx.set(dut.s_axis_tlast, last)
            ctx.set(dut.s_axis_tvalid, 1)
            _, ready = await ctx.posedge(dut.aclk).sample(dut.s_axis_tready)
            if not ready:
                continue
            queue.pop(0)
            state["taken_in"] += 1
            if reset_after is not None and state["taken_in"] == reset_after:
                # aresetn low mid-sample: the pipeline drops what it holds; stream everything again.
                ctx.set(dut.s_axis_tvalid, 0)
                state["in_reset"] = True
                ctx.set(dut.aresetn, 0)
                for _ in range(reset_cycles):
                    assert not ctx.get(dut.s_axis_tready) and not ctx.get(dut.m_axis_tvalid), \
                        "s_axis_tready or m_axis_tvalid high while aresetn is low"
                    await ctx.posedge(dut.aclk)
                ctx.set(dut.aresetn, 1)
                state["in_reset"] = False
                state["out"].clear()
                state["out_cycles"].clear()
                queue = list(beats)
        ctx.set(dut.s_axis_tvalid, 0)
        state["sent_all"] = True

    async def checker(ctx):
        rng = random.Random(seed + 1)
        pending = None
        for cycle in range(max_cycles):
            ready = 0 if stall and rng.random() < stall else 1
            # tvalid must not depend on tready: read it both ways within the cycle.
            ctx.set(dut.m_axis_tready, 1 - ready)
            other = ctx.get(dut.m_axis_tvalid)
            ctx.set(dut.m_axis_tready, ready)
            valid, last = ctx.get(dut.m_axis_tvalid), ctx.get(dut.m_axis_tlast)
            assert valid == other, f"cycle {cycle}: m_axis_tvalid changes with m_axis_tready"
            bits = int(ctx.get(dut.m_axis_tdata.as_value()))
            if state["in_reset"]:
                pending = None
            if pending is not None:
                assert valid, f"cycle {cycle}: m_axis_tvalid dropped before the beat was taken"
                assert bits == pending, f"cycle {cycle}: m_axis_tdata changed while tvalid and not tready"
            if valid:
                assert last == 1, f"cycle {cycle}: m_axis_tlast is 0 on a result beat"
            await ctx.posedge(dut.aclk)
            state["cycles"] = cycle + 1
            if valid and ready:
                state["out"].append(bits)
                state["out_cycles"].append(cycle)
                pending = None
                if len(state["out"]) == expected_results and state["sent_all"]:
                    # a few more cycles: nothing further may come out
                    for _ in range(50):
                        assert not ctx.get(dut.m_axis_tvalid), "a stray result beat after the last sample"
                        await ctx.posedge(dut.aclk)
                    return
            else:
                pending = bits if valid else None
        raise AssertionError(f"{len(state['out'])} of {expected_results} results in {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_process(clock)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    assert len(state["out"]) == expected_results, f"{len(state['out'])} results of {expected_results}"
    return state["out"], state["out_cycles"]


def _decode_like_a_vivado_user(raw: int, layout: dict):
    """Slice ``m_axis_tdata`` by the bit ranges ``design.json`` documents (not through the Amaranth layout)."""
    high, low = layout["label"]["bits"]
    label = (raw >> low) & ((1 << (high - low + 1)) - 1)
    scores = []
    for entry in layout["scores"]:
        high, low = entry["bits"]
        width = high - low + 1
        value = (raw >> low) & ((1 << width) - 1)
        scores.append(value - (1 << width) if value >> (width - 1) else value)
    return label, scores


def _check_exact(dut, raws, samples):
    net = dut.net
    dut_layout = axis_layout_description(net.num_classes, dut.plan.score_bits)
    reference = golden.run(net, samples)
    decoded = [_decode_like_a_vivado_user(raw, dut_layout) for raw in raws]
    np.testing.assert_array_equal([d[0] for d in decoded], reference.labels)
    np.testing.assert_array_equal(np.array([d[1] for d in decoded]), reference.scores)


@pytest.mark.parametrize("gap,stall", [(0.0, 0.0), (0.5, 0.5), (0.2, 0.9)])
def test_bit_exact_under_gaps_and_back_pressure(gap, stall):
    net = _net_with_negative_scores()
    samples = _samples(3, 10, net.in_features)
    dut = AXIStreamAccelerator(net, {"fc1": 2, "fc2": 3})
    raws, _ = _run(dut, samples, gap=gap, stall=stall, seed=int(gap * 10 + stall * 100))
    _check_exact(dut, raws, samples)
    assert (golden.run(net, samples).scores < 0).any()     # sign extension was exercised


def test_reset_mid_sample_drops_the_sample_and_recovers():
    net = random_network(5, sizes=(9, 7, 3), timesteps=4, weight_bits=6)
    samples = _samples(8, 6, net.in_features)
    dut = AXIStreamAccelerator(net, {"fc1": 3, "fc2": 1})
    # 2.5 samples in: the third is cut off, and the first results may be out or in flight.
    raws, _ = _run(dut, samples, gap=0.3, stall=0.5, reset_after=2 * 9 + 4, seed=4)
    _check_exact(dut, raws, samples)


def test_output_register_costs_no_throughput():
    """With tready high the register refills as it empties: the results come at the stream top's spacing."""
    net = random_network(11, sizes=(5, 4, 3), timesteps=3, weight_bits=4)
    samples = _samples(2, 12, net.in_features)
    dut = AXIStreamAccelerator(net, {"fc1": 2, "fc2": 3})
    raws, cycles = _run(dut, samples)
    _check_exact(dut, raws, samples)
    stream = simulate_accelerator(Accelerator(net, {"fc1": 2, "fc2": 3}), samples)
    assert np.diff(cycles).tolist() == np.diff(stream.result_cycles).tolist()
    # 2 cycles of reset here, then one cycle in the output register.
    assert cycles[0] - stream.result_cycles[0] == 2 + 1


def test_tdata_layout_is_whole_bytes():
    layout = axis_result_layout(10, 19)
    assert Shape.cast(layout).width == 8 * (1 + 10 * 3)
    assert layout["label"].shape.width == 8 and layout["scores"].shape.elem_shape.signed
    description = axis_layout_description(10, 19)
    assert description["m_axis_tdata_bits"] == 248 and description["m_axis_tkeep"] is None
    assert description["scores"][0] == {"class": 0, "byte": 1, "bits": [31, 8]}
    assert description["scores"][9]["bits"] == [247, 224]
    # 300 classes: a two-byte label; 8-bit scores: one byte each.
    assert axis_layout_description(300, 8)["label"]["bits"] == [15, 0]
    assert axis_layout_description(300, 8)["scores"][1]["bits"] == [31, 24]


def test_ports_are_the_axi_names_with_vivado_attributes():
    dut = AXIStreamAccelerator(random_network(1, sizes=(4, 3), timesteps=2, weight_bits=4))
    assert set(dut.signature.members) == set(AXIS_PORTS)
    assert dut.s_axis_tdata.attrs["X_INTERFACE_INFO"] == "xilinx.com:interface:axis:1.0 s_axis TDATA"
    assert dut.m_axis_tdata.as_value().attrs["X_INTERFACE_INFO"] == "xilinx.com:interface:axis:1.0 m_axis TDATA"
    assert dut.aresetn.attrs["X_INTERFACE_PARAMETER"] == "POLARITY ACTIVE_LOW"
    assert "ASSOCIATED_BUSIF s_axis:m_axis" in dut.aclk.attrs["X_INTERFACE_PARAMETER"]
    Fragment.get(dut, None)             # elaborates (the wrapped Accelerator counts as used)
