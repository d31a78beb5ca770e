"""Stream bus-functional models for cocotb 2.x: source, sink, monitor, scoreboard, pause generators.

The structure follows cocotbext-axi's AXI-Stream models, cut down to what an Amaranth
``lib.stream`` port needs (``<name>__valid``, ``<name>__ready``, ``<name>__payload``; a transfer
happens on a rising clock edge where ``valid`` and ``ready`` are both high). The same models drive an
AXI4-Stream port (``<name>_tvalid``, ``<name>_tready``, ``<name>_tdata``, ``<name>_tlast``): give them
:func:`axis_signals`, whose payload is ``tdata`` with ``tlast`` in the bit above it (:class:`PackedPayload`).

* :class:`StreamSource` drives ``valid``/``payload`` from a queue of beats; a pause generator
  inserts gaps between beats (``valid`` never drops before its beat is taken).
* :class:`StreamMonitor` observes transfers passively and hands each to its callbacks.
* :class:`StreamSink` is a monitor that also drives ``ready`` (back-pressure from a pause generator) and
  checks the producer's side of the handshake: a beat offered while ``ready`` is low stays offered, with
  the same payload, until it is taken (Amaranth's stream rules and AXI4-Stream's alike).
* :class:`Scoreboard` compares observed beats in order against queues of expected beats.

**Timing discipline.** Everything drives on the falling clock edge and samples in the ``ReadOnly``
phase that follows, when the design's combinational outputs (``ready`` may depend on ``valid``) have
settled and nothing can change before the next rising edge. This is correct on event-driven
simulators and on Verilator alike (on Verilator a ``RisingEdge`` callback already sees the values
*after* the edge, so the cocotbext-axi habit of sampling at the rising edge would be off by one
there). Idle waits jump ahead with value-change or timer triggers instead of waking every cycle.

A transfer is stamped with its *cycle*: the index of the rising edge it happens on, counted from the
start of the clock (edge ``n`` at ``n`` clock periods).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable, Iterator

import cocotb
from cocotb.simtime import convert, get_sim_time
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge, Timer
from spikeforge.ir.errors import InputError

__all__ = ["Transfer", "random_pauses", "no_pauses", "Clocking", "PackedPayload", "stream_signals", "axis_signals",
           "StreamSource", "StreamMonitor", "StreamSink", "Scoreboard"]


# -- pause generators --------------------------------------------------------------------------------

def random_pauses(density: float, seed: int) -> Iterator[bool]:
    """Seeded, independent pauses: ``True`` (pause this cycle) with probability ``density``."""
    if not 0.0 <= density < 1.0:
        raise InputError(f"pause density {density!r} must be in [0, 1)")
    rng = random.Random(seed)
    while True:
        yield rng.random() < density


def no_pauses() -> Iterator[bool]:
    while True:
        yield False


def _pause_run(pauses: Iterator[bool] | None) -> int:
    """How many cycles to pause from now: consecutive ``True`` values of the generator, then one ``False``."""
    if pauses is None:
        return 0
    run = 0
    while next(pauses):
        run += 1
    return run


# -- clocking ----------------------------------------------------------------------------------------

class Clocking:
    """The clock's period, in simulator steps, and the cycle count of the current time.

    The clock must start high at time 0 (``Clock(...).start(start_high=True)``): rising edge ``n`` at
    ``n * period``, falling edges half-way between.
    """

    def __init__(self, clock, period: float, unit: str = "ns"):
        self.clock = clock
        self.period_steps = int(convert(period, unit, to="step"))
        if self.period_steps % 2:
            raise InputError(f"clock period {period} {unit} is an odd number of simulator steps")

    def next_edge(self) -> int:
        """The rising edge that ends the current cycle (when called between edges)."""
        return get_sim_time("step") // self.period_steps + 1

    def now(self) -> int:
        return get_sim_time("step") // self.period_steps

    async def cycles(self, count: int):
        """Wait ``count`` whole periods (from a falling edge, lands on a falling edge)."""
        if count > 0:
            await Timer(count * self.period_steps, unit="step")


class Transfer:
    """One beat that crossed a stream: its payload (an int), the cycle it happened on, and a tag."""

    __slots__ = ("payload", "cycle", "tag")

    def __init__(self, payload: int, cycle: int, tag=None):
        self.payload, self.cycle, self.tag = payload, cycle, tag

    def __repr__(self):
        return f"Transfer(payload={self.payload:#x}, cycle={self.cycle}, tag={self.tag!r})"


def _high(signal, clocking) -> bool:
    """A 1-bit control signal's value; X or Z on a handshake is a design error, reported as such."""
    value = signal.value
    try:
        return bool(value)
    except ValueError:
        raise AssertionError(f"{signal._name} is {value} at cycle {clocking.now()} (a handshake signal must be "
                             f"0 or 1)") from None


class _Model:
    """Start/stop bookkeeping shared by the models; a model that fails keeps its error in ``failure``."""

    _task = None
    failure = None

    def start(self):
        if self._task is None or self._task.done():
            self._task = cocotb.start_soon(self._guarded())
        return self

    def _cancel(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _guarded(self):
        try:
            await self._run()
        except Exception as error:
            self.failure = f"{type(self).__name__}({self.name!r}): {error}"
            raise


class PackedPayload:
    """Several port signals read and written as one integer payload: ``fields`` are ``(handle, width)``,
    packed from the least significant bit (an AXI4-Stream beat: ``tdata`` then ``tlast``)."""

    def __init__(self, fields):
        self.fields = list(fields)
        self._name = "+".join(handle._name for handle, _ in self.fields)

    @property
    def value(self) -> int:
        raw, offset = 0, 0
        for handle, width in self.fields:
            raw |= int(handle.value) << offset
            offset += width
        return raw

    @value.setter
    def value(self, raw: int):
        for handle, width in self.fields:
            handle.value = raw & ((1 << width) - 1)
            raw >>= width


def stream_signals(dut, name: str):
    """``(valid, ready, payload)`` of an Amaranth stream port: ``<name>__valid/ready/payload``."""
    try:
        return (getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready"), getattr(dut, f"{name}__payload"))
    except AttributeError as error:
        raise AttributeError(f"the design has no stream {name!r} (ports {name}__valid, {name}__ready, "
                             f"{name}__payload): {error}") from None


def axis_signals(dut, name: str, tdata_bits: int):
    """``(valid, ready, payload)`` of an AXI4-Stream port ``<name>_t*``; the payload is ``tdata`` with ``tlast``
    in bit ``tdata_bits``."""
    try:
        return (getattr(dut, f"{name}_tvalid"), getattr(dut, f"{name}_tready"),
                PackedPayload([(getattr(dut, f"{name}_tdata"), int(tdata_bits)), (getattr(dut, f"{name}_tlast"), 1)]))
    except AttributeError as error:
        raise AttributeError(f"the design has no AXI4-Stream port {name!r} (ports {name}_tvalid, {name}_tready, "
                             f"{name}_tdata, {name}_tlast): {error}") from None


def _signals(dut, name: str, signals):
    return signals if signals is not None else stream_signals(dut, name)


# -- source ------------------------------------------------------------------------------------------

class StreamSource(_Model):
    """Drives a stream the design consumes.

    Parameters
    ----------
    dut : the cocotb root handle
    name : str
        Stream port prefix, e.g. ``"pixels"``.
    clocking : Clocking
    pauses : iterator of bool, optional
        A pause generator; a ``True`` keeps ``valid`` low for a cycle before the next beat.
    signals : (valid, ready, payload), optional
        The port's handles (default :func:`stream_signals` of ``name``; :func:`axis_signals` for AXI4-Stream).

    Attributes
    ----------
    callbacks : list of callables
        Called with each :class:`Transfer` as the design takes it.
    sent : int
        Beats taken so far.
    """

    def __init__(self, dut, name: str, clocking: Clocking, pauses=None, signals=None):
        self.valid, self.ready, self.payload = _signals(dut, name, signals)
        self.name = name
        self.clocking = clocking
        self.pauses = pauses
        self.queue: deque = deque()
        self.callbacks: list[Callable[[Transfer], None]] = []
        self.sent = 0
        self._not_empty = Event()
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0

    def send_nowait(self, payload: int, tag=None):
        self.queue.append((int(payload), tag))
        self._idle.clear()
        self._not_empty.set()

    async def wait_idle(self):
        """Until every queued beat has been taken."""
        await self._idle.wait()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    def stop(self):
        """Stop driving (``valid`` low); queued beats are dropped. For resets."""
        self._cancel()
        self.queue.clear()
        self._idle.set()
        self._not_empty.clear()
        self.valid.value = 0

    async def _run(self):
        clocking = self.clocking
        await FallingEdge(clocking.clock)
        while True:
            if not self.queue:
                self.valid.value = 0
                self._idle.set()
                self._not_empty.clear()
                await self._not_empty.wait()
                await FallingEdge(clocking.clock)
                continue
            gap = _pause_run(self.pauses)
            if gap:
                self.valid.value = 0
                await clocking.cycles(gap)
            payload, tag = self.queue[0]
            self.payload.value = payload
            self.valid.value = 1
            await ReadOnly()
            while not _high(self.ready, clocking):
                # ready can only change at a clock edge: sleep until it rises, then look again.
                await RisingEdge(self.ready)
                await FallingEdge(clocking.clock)
                await ReadOnly()
            self.queue.popleft()
            self.sent += 1
            transfer = Transfer(payload, clocking.next_edge(), tag)
            for callback in self.callbacks:
                callback(transfer)
            await FallingEdge(clocking.clock)


# -- monitor and sink --------------------------------------------------------------------------------

class StreamMonitor(_Model):
    """Observes a stream passively; every transfer goes to ``callbacks`` and, if kept, to ``queue``.

    Parameters
    ----------
    keep : bool
        Append each :class:`Transfer` to :attr:`queue` (a consumer may pop them).
    signals : (valid, ready, payload), optional
        As :class:`StreamSource` takes them.
    """

    def __init__(self, dut, name: str, clocking: Clocking, keep: bool = True, signals=None):
        self.valid, self.ready, self.payload = _signals(dut, name, signals)
        self.name = name
        self.clocking = clocking
        self.keep = keep
        self.queue: deque = deque()
        self.callbacks: list[Callable[[Transfer], None]] = []
        self.received = 0

    def stop(self):
        self._cancel()

    def _observe(self):
        transfer = Transfer(int(self.payload.value), self.clocking.next_edge())
        self.received += 1
        if self.keep:
            self.queue.append(transfer)
        for callback in self.callbacks:
            callback(transfer)

    async def _run(self):
        clocking = self.clocking
        await FallingEdge(clocking.clock)
        while True:
            await ReadOnly()
            valid = _high(self.valid, clocking)
            if valid and _high(self.ready, clocking):
                self._observe()
                await FallingEdge(clocking.clock)
            elif not valid:
                await RisingEdge(self.valid)
                await FallingEdge(clocking.clock)
            else:
                await RisingEdge(self.ready)
                await FallingEdge(clocking.clock)


class StreamSink(StreamMonitor):
    """Consumes a stream the design produces: drives ``ready`` (with back-pressure) and monitors it.

    Parameters
    ----------
    pauses : iterator of bool, optional
        A pause generator; while the design offers a beat, each ``True`` holds ``ready`` low one cycle.
        While the design offers nothing, ``ready`` stays high.

    A beat offered while ``ready`` is low that is withdrawn or changes before it is taken stops the sink
    with an ``AssertionError`` (kept in :attr:`failure`).
    """

    def __init__(self, dut, name: str, clocking: Clocking, pauses=None, keep: bool = True, signals=None):
        super().__init__(dut, name, clocking, keep, signals)
        self.pauses = pauses
        self.ready.value = 0

    def stop(self):
        super().stop()
        self.ready.value = 0

    def _check_held(self, offered):
        """``offered``: the payload shown with ``valid`` in the cycle before (``ready`` low), or ``None``."""
        if offered is None:
            return
        if not _high(self.valid, self.clocking):
            raise AssertionError(f"{self.name}: valid dropped at cycle {self.clocking.next_edge()} before the beat "
                                 f"offered while ready was low was taken")
        payload = int(self.payload.value)
        if payload != offered:
            raise AssertionError(f"{self.name}: the payload changed from {offered:#x} to {payload:#x} at cycle "
                                 f"{self.clocking.next_edge()} while valid and not ready")

    async def _run(self):
        clocking = self.clocking
        await FallingEdge(clocking.clock)
        offered = None
        while True:
            stall = _pause_run(self.pauses)
            if stall:
                self.ready.value = 0
                # Watch every stalled cycle: a beat once offered must stay offered, unchanged.
                for _ in range(stall):
                    await ReadOnly()
                    self._check_held(offered)
                    offered = int(self.payload.value) if _high(self.valid, clocking) else None
                    await FallingEdge(clocking.clock)
            self.ready.value = 1
            await ReadOnly()
            self._check_held(offered)
            offered = None
            if _high(self.valid, clocking):
                self._observe()
            else:
                await RisingEdge(self.valid)
            await FallingEdge(clocking.clock)


# -- scoreboard --------------------------------------------------------------------------------------

class Scoreboard:
    """In-order comparison of observed beats against expected ones, per monitored stream.

    ``add_interface(monitor, expected)`` registers a monitor and a deque of ``(tag, payload)``; each
    observed beat pops the oldest expectation and is compared with it. An observed beat with nothing
    expected is a mismatch too (``expected`` is ``None``). Mismatches are recorded, not raised, so a
    run reports all of them; :attr:`drained` fires when an interface's expectations run out.

    Attributes
    ----------
    mismatches : list of dict
        ``{"stream", "tag", "expected", "got", "cycle"}``, payloads as ints.
    matched : int
    """

    def __init__(self):
        self.mismatches: list[dict] = []
        self.matched = 0
        self.expected: dict[str, deque] = {}
        self.drained: dict[str, Event] = {}
        self.callbacks: list[Callable[[str, object, int, Transfer, bool], None]] = []

    def add_interface(self, monitor: StreamMonitor, expected: deque | None = None) -> deque:
        queue = expected if expected is not None else deque()
        name = monitor.name
        self.expected[name] = queue
        event = Event()
        if not queue:
            event.set()
        self.drained[name] = event
        monitor.callbacks.append(lambda transfer: self._compare(name, transfer))
        return queue

    def expect(self, name: str, tag, payload: int):
        self.expected[name].append((tag, int(payload)))
        self.drained[name].clear()

    def forget(self, name: str) -> list:
        """Drop the outstanding expectations of a stream (after a reset); returns their tags."""
        tags = [tag for tag, _ in self.expected[name]]
        self.expected[name].clear()
        self.drained[name].set()
        return tags

    def _compare(self, name: str, transfer: Transfer):
        queue = self.expected[name]
        if queue:
            tag, expected = queue.popleft()
        else:
            tag, expected = None, None
        transfer.tag = tag
        ok = expected is not None and expected == transfer.payload
        if ok:
            self.matched += 1
        else:
            self.mismatches.append({"stream": name, "tag": tag, "expected": expected, "got": transfer.payload,
                                    "cycle": transfer.cycle})
        for callback in self.callbacks:
            callback(name, tag, expected, transfer, ok)
        if not queue:
            self.drained[name].set()
