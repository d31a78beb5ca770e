"""The top level: encoder -> FIFO -> iLIF layers (FIFOs between) -> output layer -> results.

A hidden layer is a dense core (:class:`~spikeforge.hdl.layer.DenseILIF`) or a conv core
(:class:`~spikeforge.hdl.conv_layer.ConvILIF`, with the max pool that follows it fused into its fire
phase); the output layer is dense. Conv cores take the same FIFOs and the same event streams.

Every stage works on a different sample at once: the encoder loads sample n+1 while it emits
sample n; layer l fires sample n (its events flow through a FIFO straight into layer l+1's
accumulate phase) while it accumulates sample n+1 into its other membrane bank (``membrane_banks=2``,
the default; with ``membrane_banks=1`` a layer's accumulate and readout take turns on one bank). Steady-state throughput is set by the slowest
stage (see :mod:`spikeforge.hdl.cycle_model`).

Ports (DESIGN.md §3, fixed): ``pixels`` in, ``results`` out; in Verilog ``clk``, ``rst``,
``pixels__valid/ready/payload``, ``results__valid/ready/payload``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .conv_layer import ConvILIF
from .conv_plan import ConvLayerPlan
from .encoder import SpikeEncoder
from .fifo import StreamFIFO
from .folding import check_membrane_banks, resolve_folding
from .layer import DenseILIF, OutputLayer
from .layouts import pixel_layout, result_layout
from .plan import check_multiplier, check_supported, plan_network
from .single_port import HalfRateLayer
from spikeforge.ir.errors import InputError

__all__ = ["Accelerator", "DEFAULT_FIFO_DEPTH", "StageProbeLayout"]

#: Events buffered between stages: absorbs the burst of a fire sweep step that the next layer
#: takes longer to accumulate.
DEFAULT_FIFO_DEPTH = 16

#: One layer's handshakes, as :meth:`Accelerator.stage_probes` shows them: its input events (from the FIFO in
#: front of it: ``valid``, ``ready``, ``last`` of the beat offered) and its output (spike events, or the output
#: layer's results, where every beat is a sample's last). ``gated``: the layer's core does not run this cycle (a
#: half-rate layer's other cycle, :class:`~spikeforge.hdl.single_port.HalfRateLayer`): its handshakes are held
#: off, so they do not show what the layer is doing.
StageProbeLayout = data.StructLayout({"in_valid": 1, "in_ready": 1, "in_last": 1,
                                      "out_valid": 1, "out_ready": 1, "out_last": 1, "gated": 1})


class Accelerator(wiring.Component):
    """The pipelined iLIF accelerator for one network.

    Parameters
    ----------
    net : Network
    folding : dict of str -> int, Folding, or None
        Lanes per layer; a partial dict balances the rest; ``None`` chooses all automatically
        (:func:`spikeforge.hdl.folding.auto_folding`).
    fifo_depth : int
        Entries of each inter-stage event FIFO.
    membrane_banks : int
        Membrane banks per layer: 2 (ping-pong, default: a layer accumulates sample n+1 while it
        fires sample n) or 1 (compact: less memory and routing, the sweep follows the accumulate
        phase). Automatic folding balances for it.
    multiplier : str
        How lanes (dense lanes and conv adders) scale a weight by ``2^(T-1-t)``: ``"dsp"`` (default; a multiplier per lane, a
        DSP where the device has them) or ``"logic"`` (a shifter in LUTs, no DSP); see
        :func:`~spikeforge.hdl.plan.choose_multiplier` for the automatic choice from a DSP budget.

    Members
    -------
    pixels : In(stream.Signature(pixel_layout()))
        Raw input bytes, ``last`` on a sample's final byte.
    results : Out(stream.Signature(result_layout(C, S)))
        One beat per sample: ``label`` (lowest index on ties) and ``scores``.

    Attributes
    ----------
    plan : AcceleratorPlan
        Widths, folding and ROM images.

    Raises
    ------
    InputError
        For a network with a layer there is no core for (a conv output layer, a max pool that does not
        directly follow a conv layer), see :func:`~spikeforge.hdl.plan.check_supported`; for an unknown
        ``multiplier``.
    FoldingError
        For a bad folding (unknown layer, a max pool's name, lanes outside ``1..out_features`` or,
        for a conv layer, ``1..out_channels``).
    ValueError
        For a ``fifo_depth`` below 2.
    """

    def __init__(self, net, folding=None, *, fifo_depth: int = DEFAULT_FIFO_DEPTH, membrane_banks: int = 2,
                 multiplier: str = "dsp"):
        check_supported(net)
        self.net = net
        self.membrane_banks = check_membrane_banks(membrane_banks)
        self.multiplier = check_multiplier(multiplier)
        self.folding = resolve_folding(net, folding, membrane_banks=self.membrane_banks)
        self.plan = plan_network(net, self.folding, membrane_banks=self.membrane_banks, multiplier=self.multiplier)
        if not isinstance(fifo_depth, int) or fifo_depth < 2:
            # Depth 0 never accepts a beat (deadlock); depth 1 moves one beat every other cycle,
            # which the cycle model does not describe.
            raise InputError(f"fifo_depth {fifo_depth!r} is not supported; it must be an integer >= 2")
        self.fifo_depth = fifo_depth
        self._probes = None
        super().__init__({
            "pixels": In(stream.Signature(pixel_layout())),
            "results": Out(stream.Signature(result_layout(self.plan.classes, self.plan.score_bits))),
        })

    def stage_probes(self) -> list:
        """One ``Signal(StageProbeLayout)`` per layer (``plan.layers`` order: dense and conv cores, a max pool
        fused into its conv), driven with that layer's input and output handshakes, for performance counters
        outside the accelerator (:mod:`spikeforge.boards.counters`). They only watch: nothing inside reads them,
        and an accelerator whose probes were never asked for elaborates without them."""
        if self._probes is None:
            self._probes = [Signal(StageProbeLayout, name=f"{layer.name}_probe") for layer in self.plan.layers]
        return self._probes

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        m.submodules.encoder = encoder = SpikeEncoder(in_features=plan.in_features, timesteps=plan.timesteps,
                                                      lut=plan.input_lut, lanes=plan.encoder_lanes)
        wiring.connect(m, wiring.flipped(self.pixels), encoder.pixels)
        producer = encoder.events
        for index, layer_plan in enumerate(plan.layers):
            fifo = StreamFIFO(producer.payload.shape(), self.fifo_depth)
            m.submodules[f"{layer_plan.name}_fifo"] = fifo
            wiring.connect(m, producer, fifo.w)
            if layer_plan.fires:
                core_class = ConvILIF if isinstance(layer_plan, ConvLayerPlan) else DenseILIF
                # Membrane banks in single-port RAM: the core at half rate (hdl/single_port.py).
                core = HalfRateLayer(core_class, layer_plan) if layer_plan.half_rate else core_class(layer_plan)
                m.submodules[layer_plan.name] = core
                wiring.connect(m, fifo.r, core.events)
                producer = core.spikes
            else:
                core = OutputLayer(layer_plan)
                m.submodules[layer_plan.name] = core
                wiring.connect(m, fifo.r, core.events)
                wiring.connect(m, core.results, wiring.flipped(self.results))
            if self._probes is not None:
                spikes = getattr(core, "spikes", None)
                output = spikes if spikes is not None else core.results
                last = spikes.payload.last if spikes is not None else 1     # one result beat per sample
                probe = self._probes[index]
                m.d.comb += [probe.in_valid.eq(fifo.r.valid), probe.in_ready.eq(fifo.r.ready),
                             probe.in_last.eq(fifo.r.payload.last), probe.out_valid.eq(output.valid),
                             probe.out_ready.eq(output.ready), probe.out_last.eq(last)]
                if isinstance(core, HalfRateLayer):
                    m.d.comb += probe.gated.eq(~core.enabled)
        return m
