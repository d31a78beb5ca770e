"""An AXI4-Stream top: the :class:`~spikeforge.hdl.top.Accelerator` with the ports a Vivado or Quartus block
design expects.

:class:`AXIStreamAccelerator` wraps the accelerator without changing it: the ``pixels`` stream becomes the
AXI4-Stream slave ``s_axis``, the ``results`` stream the master ``m_axis`` behind one output register, and
the clock domain is driven from ``aclk`` and the active-low ``aresetn``.

=================  =====  ==========================  =====================================================
port               dir    width                       meaning
=================  =====  ==========================  =====================================================
``aclk``           in     1                           the clock; everything is synchronous to its rising edge
``aresetn``        in     1                           reset, active low, sampled on ``aclk`` (synchronous)
``s_axis_tdata``   in     8                           one raw input value (pixel) per beat, CHW order
``s_axis_tvalid``  in     1
``s_axis_tready``  out    1                           may depend on ``s_axis_tvalid`` (AXI4-Stream allows it)
``s_axis_tlast``   in     1                           1 on the last value of a sample
``m_axis_tdata``   out    ``8·(Lb + C·Sb)``           the result of one sample (layout below)
``m_axis_tvalid``  out    1                           a register (low in reset): never depends on ``m_axis_tready``
``m_axis_tready``  in     1
``m_axis_tlast``   out    1                           always 1: a result is a one-beat packet
=================  =====  ==========================  =====================================================

**The result beat** (:func:`axis_result_layout`), byte lanes from the least significant: the label in
``Lb = ceil(label_bits / 8)`` bytes (zero-extended; one byte up to 256 classes), then the ``C`` scores, score
``i`` in bytes ``Lb + i·Sb .. Lb + (i+1)·Sb - 1``, each sign-extended from ``S`` bits to ``Sb = ceil(S / 8)``
whole bytes (two's complement, little endian). Every byte carries data, so there is no ``m_axis_tkeep``
(AXI4-Stream: an absent TKEEP means all bytes are data bytes). In Vivado a user slices score ``i`` as
``m_axis_tdata[8*(Lb+(i+1)*Sb)-1 : 8*(Lb+i*Sb)]``.

**Handshake rules** (AXI4-Stream, ARM IHI 0051): a transfer happens on a rising edge of ``aclk`` where
``TVALID`` and ``TREADY`` are both high. ``m_axis_tvalid`` and ``m_axis_tdata`` come from a register (a
one-entry buffer): ``m_axis_tvalid`` never depends on ``m_axis_tready``, and once it is high it stays high with
``m_axis_tdata`` unchanged until the beat is taken. While ``m_axis_tready`` is high the buffer refills in the
same cycle it empties, so the register costs one cycle of latency and no throughput. While ``aresetn`` is low
``m_axis_tvalid`` and ``s_axis_tready`` are held low, and a reset drops the samples in flight (a partly
sent sample included: the next beat after reset starts a new sample).

Each port carries Vivado's ``X_INTERFACE_INFO`` attribute (and ``aclk``/``aresetn`` their
``X_INTERFACE_PARAMETER``: the bus interfaces ``s_axis:m_axis`` are associated with ``aclk`` and ``aresetn``
is ``ACTIVE_LOW``), so *Add Module* in a block design shows the two AXI4-Stream interfaces, the clock and
the reset. In Quartus Platform Designer's component editor the ports map one to one onto an AXI4-Stream
sink and source (signal roles ``tdata``/``tvalid``/``tready``/``tlast``), a clock input and a ``reset_n`` input.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import label_bits
from .top import DEFAULT_FIFO_DEPTH, Accelerator

__all__ = ["AXIStreamAccelerator", "axis_result_layout", "axis_layout_description", "AXIS_PORTS"]

#: Every port of the AXI4-Stream top, in the order of the table above: ``{name: (direction, what)}``.
AXIS_PORTS = {
    "aclk": ("input", "clock"), "aresetn": ("input", "reset, active low, synchronous"),
    "s_axis_tdata": ("input", "8 bits: one raw input value"), "s_axis_tvalid": ("input", "1"),
    "s_axis_tready": ("output", "1"), "s_axis_tlast": ("input", "1: last value of a sample"),
    "m_axis_tdata": ("output", "the result beat"), "m_axis_tvalid": ("output", "1"),
    "m_axis_tready": ("input", "1"), "m_axis_tlast": ("output", "1: always (one-beat packets)"),
}

_INTERFACE = "xilinx.com:interface:axis:1.0"


def _bytes(bits: int) -> int:
    return (int(bits) + 7) // 8


def axis_result_layout(classes: int, score_bits: int) -> data.StructLayout:
    """``m_axis_tdata``: ``{label: unsigned(8·Lb), scores: ArrayLayout(signed(8·Sb), C)}``, packed from the LSB.

    ``Lb`` and ``Sb`` are the label's and a score's bits rounded up to whole bytes (see the module docstring).
    """
    return data.StructLayout({"label": unsigned(8 * _bytes(label_bits(classes))),
                              "scores": data.ArrayLayout(signed(8 * _bytes(score_bits)), classes)})


def axis_layout_description(classes: int, score_bits: int) -> dict:
    """The ``m_axis_tdata`` byte layout as ``design.json`` records it (``"axis"`` entry)."""
    label_bytes, score_bytes = _bytes(label_bits(classes)), _bytes(score_bits)
    width = Shape.cast(axis_result_layout(classes, score_bits)).width
    return {
        "s_axis_tdata_bits": 8, "m_axis_tdata_bits": width, "m_axis_tkeep": None, "m_axis_beats_per_sample": 1,
        "label_bytes": label_bytes, "score_bytes": score_bytes, "score_bits": int(score_bits),
        "label": {"byte": 0, "bits": [8 * label_bytes - 1, 0], "extension": "zero"},
        "scores": [{"class": i, "byte": label_bytes + i * score_bytes,
                    "bits": [8 * (label_bytes + (i + 1) * score_bytes) - 1, 8 * (label_bytes + i * score_bytes)]}
                   for i in range(classes)],
        "score_extension": f"sign-extended from {score_bits} to {8 * score_bytes} bits (two's complement)",
        "byte_order": "little endian: byte 0 in m_axis_tdata[7:0]",
        "input_order": "one raw byte per s_axis beat, CHW order, s_axis_tlast on the sample's last value",
        "reset": "aresetn: active low, synchronous to aclk",
    }


class AXIStreamAccelerator(wiring.Component):
    """The accelerator behind AXI4-Stream ports (``aclk``, ``aresetn``, ``s_axis_*``, ``m_axis_*``).

    Parameters
    ----------
    net : Network
    folding, fifo_depth, membrane_banks
        As :class:`~spikeforge.hdl.top.Accelerator` takes them.

    Members
    -------
    aclk : In(1)
        The clock (drives the ``sync`` domain of the whole design).
    aresetn : In(1)
        Synchronous reset, active low.
    s_axis_tdata : In(8)
        One raw input value per beat; with ``s_axis_tvalid`` (In(1)), ``s_axis_tready`` (Out(1)) and
        ``s_axis_tlast`` (In(1), on the last value of a sample).
    m_axis_tdata : Out(axis_result_layout(C, S))
        One result per beat (label, then the sign-extended scores, see :func:`axis_result_layout`); with
        ``m_axis_tvalid`` (Out(1), registered, low in reset), ``m_axis_tready`` (In(1)) and ``m_axis_tlast`` (Out(1), always 1).

    Attributes
    ----------
    accelerator : Accelerator
        The wrapped core (its ``plan``, ``folding``, ``net``).
    plan : AcceleratorPlan
        ``accelerator.plan``.

    Raises
    ------
    InputError, FoldingError, ValueError
        As :class:`~spikeforge.hdl.top.Accelerator` raises them.
    """

    def __init__(self, net, folding=None, *, fifo_depth: int = DEFAULT_FIFO_DEPTH, membrane_banks: int = 2,
                 multiplier: str = "dsp"):
        self.accelerator = Accelerator(net, folding, fifo_depth=fifo_depth, membrane_banks=membrane_banks,
                                       multiplier=multiplier)
        self.plan = self.accelerator.plan
        self.net, self.folding = net, self.accelerator.folding
        self.fifo_depth, self.membrane_banks = self.accelerator.fifo_depth, self.accelerator.membrane_banks
        super().__init__({
            "aclk": In(1), "aresetn": In(1),
            "s_axis_tdata": In(8), "s_axis_tvalid": In(1), "s_axis_tready": Out(1), "s_axis_tlast": In(1),
            "m_axis_tdata": Out(axis_result_layout(self.plan.classes, self.plan.score_bits)),
            "m_axis_tvalid": Out(1), "m_axis_tready": In(1), "m_axis_tlast": Out(1),
        })
        self._annotate()

    def _annotate(self):
        """Vivado's interface attributes on the ports (they land on the Verilog port declarations)."""
        self.aclk.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:clock:1.0 aclk CLK"
        self.aclk.attrs["X_INTERFACE_PARAMETER"] = "ASSOCIATED_BUSIF s_axis:m_axis, ASSOCIATED_RESET aresetn"
        self.aresetn.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:reset:1.0 aresetn RST"
        self.aresetn.attrs["X_INTERFACE_PARAMETER"] = "POLARITY ACTIVE_LOW"
        for bus in ("s_axis", "m_axis"):
            for signal in ("tdata", "tvalid", "tready", "tlast"):
                port = getattr(self, f"{bus}_{signal}")
                port = port.as_value() if isinstance(port, data.View) else port
                port.attrs["X_INTERFACE_INFO"] = f"{_INTERFACE} {bus} {signal.upper()}"

    def elaborate(self, platform):
        m = Module()
        # The whole design runs in ``sync``, here driven from the AXI clock and reset.
        m.domains.sync = domain = ClockDomain("sync", local=True)
        m.d.comb += [domain.clk.eq(self.aclk), domain.rst.eq(~self.aresetn)]
        m.submodules.accelerator = core = self.accelerator

        # While aresetn is low no beat is taken or offered (AXI4-Stream: TVALID low during reset).
        m.d.comb += [core.pixels.payload.data.eq(self.s_axis_tdata),
                     core.pixels.payload.last.eq(self.s_axis_tlast),
                     core.pixels.valid.eq(self.s_axis_tvalid & self.aresetn),
                     self.s_axis_tready.eq(core.pixels.ready & self.aresetn)]

        # The output register: ``full`` while it holds a result; refilled in the cycle it is taken.
        full = Signal()
        take = core.results.valid & core.results.ready
        m.d.comb += [core.results.ready.eq(~full | self.m_axis_tready),
                     self.m_axis_tvalid.eq(full & self.aresetn),
                     self.m_axis_tlast.eq(1)]
        with m.If(take):
            m.d.sync += [full.eq(1), self.m_axis_tdata.label.eq(core.results.payload.label)]
            for i in range(self.plan.classes):
                # signed -> wider signed: sign extension.
                m.d.sync += self.m_axis_tdata.scores[i].eq(core.results.payload.scores[i])
        with m.Elif(self.m_axis_tready):
            m.d.sync += full.eq(0)
        return m
