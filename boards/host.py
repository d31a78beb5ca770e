"""The host side of the link: classify samples on a board over a serial port (pyserial).

:class:`BoardClient` keeps up to ``window`` sample frames in flight (the board answers in order; a
window of 2 keeps the link busy while the board computes), matches answers by sequence number,
and resends a sample whose answer is an error (:class:`~.link.Status`) or does not come within
``answer_timeout`` seconds (each resend of a sample waits twice as long; a late answer still counts
and doubles the timeout, up to :data:`MAX_ANSWER_TIMEOUT`, so a slow board is waited for). The same client talks to a real board and to the simulated board's pseudo-terminal.

A board does not say over the link which network it runs, only its sizes (:class:`~.link.LinkConfig`).
What it was made from is recorded beside it: the ``report.json`` of ``spikeforge build``, the
``report.json`` of a simulated board's folder, or the ``<bitstream>.json`` that ``spikeforge
patch-weights`` writes beside a patched bitstream. :func:`board_record` finds that record, so
``spikeforge run --network NET --build PATH`` can refuse a board made from another network
(:func:`spikeforge.ir.fingerprint.check_identity`).
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .link import (LAYER_COUNTER_NAMES, Counters, LayerCounters, LinkConfig, LinkError, Result, SlipStreamDecoder, Status, batch_frame,
                   counters_request, info_request, pack_codes, packed_sample_frame, parse_frame, sample_frame)
from spikeforge.ir.errors import InputError

__all__ = ["BoardClient", "RunStats", "CANDIDATE_BAUDS", "BOARD_BUILD_FORMAT", "SIMULATED_BOARD_FORMAT",
           "PATCHED_BITSTREAM_FORMAT", "board_record", "check_board_shape"]

#: A board whose answers come after the timeout (a simulation on a loaded machine) doubles the timeout
#: up to this many seconds.
MAX_ANSWER_TIMEOUT = 60.0

#: Tried in this order when the baud rate is not given: the boards' defaults first (FT231X on a ULX3S
#: up to 3 Mbaud, FT2232H on an iCEBreaker up to 12 Mbaud: the fastest its clock makes exactly,
#: spikeforge.boards.uart.board_baud), then older boards' 1 Mbaud and the usual rates.
CANDIDATE_BAUDS = (3_000_000, 6_000_000, 12_000_000, 1_500_000, 1_000_000, 115200, 2_000_000, 4_000_000,
                   8_000_000, 3_200_000, 921600, 460800, 230400)



#: The ``format`` of each record that names a board's network (the first is boards.build's REPORT_FORMAT).
BOARD_BUILD_FORMAT = "spikeforge-board-build"
SIMULATED_BOARD_FORMAT = "spikeforge-simulated-board"
PATCHED_BITSTREAM_FORMAT = "spikeforge-patched-bitstream"
_RECORD_FORMATS = (BOARD_BUILD_FORMAT, SIMULATED_BOARD_FORMAT, PATCHED_BITSTREAM_FORMAT)


def board_record(path) -> tuple:
    """``(record, where)``: the record of what a board was made from, found from ``path``.

    ``path`` is a ``spikeforge build`` folder or a simulated board's folder (their ``report.json``),
    such a ``report.json`` itself, or a bitstream (``<bitstream>.json`` from patch-weights when
    present, else the ``report.json`` beside it). Raises :class:`InputError` when there is none.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "report.json"]
    elif path.suffix == ".json":
        candidates = [path]
    else:
        candidates = [path.with_name(path.name + ".json"), path.parent / "report.json"]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            record = json.loads(candidate.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"--build: {candidate} is not readable JSON ({error})") from None
        if isinstance(record, dict) and record.get("format") in _RECORD_FORMATS:
            return record, candidate
    raise InputError(f"--build {path}: no record of a board's network there (looked for "
                     f"{', '.join(str(c) for c in candidates)}); give the folder `spikeforge build` or "
                     f"`spikeforge simboard` wrote, or a bitstream from either or from `spikeforge patch-weights`")


def check_board_shape(config: LinkConfig, net, port: str, network_path) -> None:
    """Refuse a board whose sizes (inputs, classes, T) are not ``net``'s: it runs another network."""
    board = (config.in_features, config.classes, config.timesteps)
    wanted = (net.in_features, net.num_classes, net.timesteps)
    if board != wanted:
        raise InputError(f"the board on {port} runs a network of {board[0]} inputs, {board[1]} classes, T = "
                         f"{board[2]}, but {network_path} has {wanted[0]} inputs, {wanted[1]} classes, T = "
                         f"{wanted[2]}: it was built for another network (load the bitstream built from "
                         f"{network_path}, or give the network it was built from)")


@dataclass
class RunStats:
    """What a :meth:`BoardClient.classify` run measured at the host, and what the board counted."""
    samples: int = 0
    seconds: float = 0.0
    resent: int = 0
    errors: dict = field(default_factory=dict)
    #: Set when late answers made the client wait longer than it was told: the timeout it ended with.
    answer_timeout: float | None = None
    #: Bytes written to the board (after stuffing) for the samples, resends included.
    bytes_sent: int = 0
    #: The board's counters (:class:`~.link.Counters`): one per batch, or one for a whole streamed run.
    counters: list = field(default_factory=list)
    #: The board's clock (Hz), to turn its cycle counts into seconds.
    clk_freq: int = 0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def board_cycles_per_sample(self) -> float | None:
        """Steady-state cycles between results, as the board counted them (all batches together)."""
        spans = [(c.last_result - c.first_result, c.samples - 1) for c in self.counters if c.samples >= 2]
        if not spans or not sum(n for _, n in spans):
            return None
        return sum(s for s, _ in spans) / sum(n for _, n in spans)

    @property
    def board_samples_per_second(self) -> float | None:
        """Samples/s measured by the board: its clock over :attr:`board_cycles_per_sample`."""
        cycles = self.board_cycles_per_sample
        return self.clk_freq / cycles if cycles and self.clk_freq else None

    @property
    def board_layers(self) -> list:
        """Per counted layer, its :class:`~.link.LayerCounters` summed over all readings (empty from a board
        without per-layer counters)."""
        layers = [c.layers for c in self.counters if c.layers]
        if not layers:
            return []
        return [LayerCounters(*(sum(getattr(reading[i], name) for reading in layers)
                                for name in LAYER_COUNTER_NAMES)) for i in range(len(layers[0]))]

    @property
    def board_latency_cycles(self) -> int | None:
        """First pixel to first result of the first batch (or run), in cycles."""
        return self.counters[0].first_result if self.counters and self.counters[0].samples else None


class BoardClient:
    """A spikeforge board behind a serial port.

    Parameters
    ----------
    port : str or serial.Serial
        Device path (``/dev/ttyUSB1``, a pty) or an open port object.
    baud : int or None
        ``None`` tries :data:`CANDIDATE_BAUDS` until the board answers an info request.
    """

    def __init__(self, port, baud=None, *, answer_timeout: float = 1.0, window: int = 2, retries: int = 5):
        if window < 1:
            raise InputError(f"window {window} must be >= 1")
        self.answer_timeout = answer_timeout
        self.window = window
        self.retries = retries
        self._decoder = SlipStreamDecoder()
        # Sequence numbers run on across runs, so a late answer to an earlier run is never taken for one
        # of this run's.
        self._seq = 0
        self._owns_port = isinstance(port, str)
        self.port_name = port if isinstance(port, str) else getattr(port, "port", "?")
        if isinstance(port, str):
            import serial   # pyserial: an optional dependency (the boards extra), only for a named port
            try:
                self.serial = serial.Serial(port, baudrate=baud or CANDIDATE_BAUDS[0], timeout=0.02)
            except serial.SerialException as error:
                raise OSError(f"cannot open serial port {port!r}: {error}") from None
        else:
            self.serial = port
        self.config = self._handshake(baud)

    def close(self):
        if self._owns_port:
            self.serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _frames(self, deadline: float):
        """Decoded frames until ``deadline`` (at least one read)."""
        while True:
            chunk = self.serial.read(4096)
            frames = self._decoder.feed(chunk) if chunk else []
            if frames or time.monotonic() >= deadline:
                return frames

    def _handshake(self, baud) -> LinkConfig:
        bauds = [baud] if baud else list(CANDIDATE_BAUDS)
        for rate in bauds:
            if getattr(self.serial, "baudrate", rate) != rate:
                self.serial.baudrate = rate
            for _ in range(2):
                self.serial.reset_input_buffer()
                self._decoder = SlipStreamDecoder()
                self.serial.write(info_request())
                deadline = time.monotonic() + self.answer_timeout
                while time.monotonic() < deadline:
                    for frame in self._frames(deadline):
                        try:
                            answer = parse_frame(frame)
                        except LinkError:
                            continue
                        if isinstance(answer, LinkConfig):
                            return answer
        tried = ", ".join(str(b) for b in bauds)
        raise OSError(f"no spikeforge board answered on {self.port_name} (tried {tried} baud); is the bitstream "
                      f"loaded and the port right?")

    def _payloads(self, samples, compact: bool) -> list:
        config = self.config
        payloads = []
        lut = config.lut() if compact else None
        for index, sample in enumerate(samples):
            data = bytes(bytearray(int(v) for v in sample.reshape(-1))) if hasattr(sample, "reshape") \
                else bytes(sample)
            if len(data) != config.in_features:
                raise InputError(f"sample {index} has {len(data)} bytes; the board takes {config.in_features}")
            payloads.append(pack_codes([lut[v] for v in data], config.code_bits) if compact else data)
        return payloads

    def _check_modes(self, compact: bool, batch: int):
        config = self.config
        if batch < 0:
            raise InputError(f"batch {batch} must be >= 0 (0: stream the samples one by one)")
        if compact and not config.code_bits:
            raise InputError(f"the board on {self.port_name} has no compact mode (link version {config.version}, "
                             f"T = {config.timesteps}: the compact mode needs T <= 4, a monotonic input LUT and "
                             f"a board built with link version 2): run without --compact")
        if batch and not config.batch_depth:
            raise InputError(f"the board on {self.port_name} was built without a batch buffer (link version "
                             f"{config.version}, batch depth 0): run without --batch, or rebuild the board")

    def read_counters(self) -> Counters | None:
        """Read (and clear) the board's performance counters; ``None`` from a version 1 board or no answer."""
        if self.config.version < 2:
            return None
        return self._await_counters(self.answer_timeout, self._parse_quietly)

    def _parse_quietly(self, raw: bytes):
        try:
            return parse_frame(raw, self.config)
        except LinkError:
            return None

    def _await_counters(self, silence: float, take) -> Counters | None:
        """Send one counters request and wait for its answer; ``None`` when none comes.

        The board answers in order, so every frame before the counters is something sent earlier:
        ``take(raw)`` handles it (and returns it parsed, ``None`` if it is of no interest), and while
        such frames come the wait goes on. After ``silence`` seconds without a frame the request is
        sent once more, and the second wait is at least :data:`MAX_ANSWER_TIMEOUT` long: a second
        request while the first is merely slow would leave a stale counters frame on the link.
        """
        for wait in (silence, max(silence, MAX_ANSWER_TIMEOUT)):
            self.serial.write(counters_request())
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                for raw in self._frames(min(deadline, time.monotonic() + 0.05)):
                    answer = take(raw)
                    if isinstance(answer, Counters):
                        return answer
                    if answer is not None:
                        deadline = max(deadline, time.monotonic() + wait)
        return None

    def classify(self, samples, on_result=None, stats: RunStats | None = None, *, compact: bool = False,
                 batch: int = 0) -> list:
        """Classify raw samples (each ``in_features`` bytes); return one :class:`~.link.Result` per sample.

        ``on_result(index, result)`` is called as answers arrive (in order). ``compact`` sends the
        samples' T-bit codes packed (the board's LUT, from its info frame); ``batch`` > 0 uploads
        ``batch`` samples at a time into the board's batch buffer, split into batches of the board's
        ``batch_depth`` when larger, and reads the board's counters after each. The board's
        counters land in ``stats.counters`` (a streamed run: one reading for the whole run).

        Raises
        ------
        InputError
            A sample of the wrong size, or a mode the board lacks.
        OSError
            The board stopped answering (``retries`` resends of one sample did not help).
        """
        self._check_modes(compact, batch)
        frames = self._payloads(samples, compact)
        stats = stats if stats is not None else RunStats()
        stats.clk_freq = self.config.clk_freq
        if batch:
            return self._classify_batches(frames, compact, min(batch, self.config.batch_depth), on_result, stats)
        if self.config.version >= 2:
            self.read_counters()            # clears them: the reading after the run covers just the run
        results = self._stream(frames, compact, on_result, stats)
        counters = self.read_counters()
        if counters is not None:
            stats.counters.append(counters)
        return results

    def _classify_batches(self, frames, compact, size, on_result, stats) -> list:
        results = [None] * len(frames)
        start = time.monotonic()
        seq = self._seq
        for first in range(0, len(frames), size):
            chunk = frames[first:first + size]
            frame = batch_frame(seq, chunk, packed=compact)
            answers, counters = self._run_batch(frame, seq, len(chunk), stats)
            for offset, answer in enumerate(answers):
                results[first + offset] = answer
                if on_result is not None:
                    on_result(first + offset, answer)
            if counters is None:
                counters = self.read_counters()
            if counters is not None:
                stats.counters.append(counters)
            seq = (seq + len(chunk)) & 0xFF
        self._seq = seq
        stats.samples += len(frames)
        stats.seconds += time.monotonic() - start
        return results

    def _run_batch(self, frame: bytes, seq: int, count: int, stats) -> tuple:
        """Send one batch frame until all its answers are OK; return them and the board's counters if
        they were read on the way (else ``None``).

        A batch is never sent again while the board may still be running it: the board's one batch
        buffer would be overwritten under the replay. When the answers do not come in time, the host
        asks for the counters instead: the board answers requests in order, so their answer says the
        board is done with everything sent before. All answers in by then: the board was only slow
        (a simulation on a loaded machine): the timeout doubles, as in a stream, and those counters are
        the batch's. Answers missing: the batch was lost on the way, and is sent again.
        """
        wanted = {(seq + i) & 0xFF: i for i in range(count)}
        answers = [None] * count
        # The upload takes its bytes' time on the wire before anything can come back.
        upload = 10 * len(frame) / max(1, self.config.baud)
        for attempt in range(self.retries + 1):
            self.serial.write(frame)
            stats.bytes_sent += len(frame)
            deadline = time.monotonic() + upload + self.answer_timeout * (1 << attempt)
            failed = self._collect_batch(answers, wanted, deadline, stats)
            if failed is None and None in answers:
                counters = self._sync_batch(answers, wanted, stats)
                if None not in answers:
                    self.answer_timeout = min(2 * self.answer_timeout, MAX_ANSWER_TIMEOUT)
                    stats.answer_timeout = self.answer_timeout
                    return answers, counters
                stats.errors["no answer"] = stats.errors.get("no answer", 0) + 1
            if None not in answers:
                return answers, None
            if attempt < self.retries:
                stats.resent += count
        raise OSError(f"a batch of {count} samples: no good answers after {self.retries} resends; errors so far "
                      f"{stats.errors}")

    def _collect_batch(self, answers: list, wanted: dict, deadline: float, stats):
        """Read a batch's answers into ``answers`` until all are in, ``deadline`` passes (pushed back while
        answers flow) or the board answers an error (returned: the board dropped the batch)."""
        failed = None
        while time.monotonic() < deadline and None in answers and failed is None:
            for raw in self._frames(min(deadline, time.monotonic() + 0.05)):
                answer = self._batch_answer(raw, answers, wanted, stats)
                if isinstance(answer, Status):
                    failed = answer
                elif isinstance(answer, Result):
                    deadline = max(deadline, time.monotonic() + self.answer_timeout)   # answers are flowing
        return failed

    def _batch_answer(self, raw: bytes, answers: list, wanted: dict, stats):
        """Take one frame read while a batch runs: an OK answer of the batch is stored and returned, an
        error answer counted and its :class:`~.link.Status` returned; any other frame is returned as parsed
        (``None`` for a damaged one)."""
        try:
            answer = parse_frame(raw, self.config)
        except LinkError:
            stats.errors["bad frame"] = stats.errors.get("bad frame", 0) + 1
            return None
        if not isinstance(answer, Result):
            return answer
        if answer.seq not in wanted:
            return None
        if answer.status == Status.REFUSED:
            raise InputError(f"the board refused a batch of {len(answers)} samples (its buffer holds "
                             f"{self.config.batch_depth})")
        if answer.status != Status.OK:
            stats.errors[answer.status.name] = stats.errors.get(answer.status.name, 0) + 1
            return answer.status
        answers[wanted[answer.seq]] = answer
        return answer

    def _sync_batch(self, answers: list, wanted: dict, stats) -> Counters:
        """Ask for the counters and wait for them, taking the batch's answers that come first: once they
        come, the board has finished with the batch."""
        counters = self._await_counters(MAX_ANSWER_TIMEOUT,
                                        lambda raw: self._batch_answer(raw, answers, wanted, stats))
        if counters is None:
            raise OSError(f"the board on {self.port_name} stopped answering (no counters within "
                          f"{2 * MAX_ANSWER_TIMEOUT:g} s); errors so far {stats.errors}")
        return counters

    def _stream(self, frames, compact, on_result, stats) -> list:
        config = self.config
        make_frame = packed_sample_frame if compact else sample_frame
        results = [None] * len(frames)
        next_index = 0
        in_flight = {}          # seq -> (index, sent_at)
        late = {}               # seq -> index: timed out and resent, but its answer is still taken if it comes
        tries = {}              # index -> resends so far
        queue = []              # indices to resend first
        seq = self._seq
        done = 0
        start = time.monotonic()
        while done < len(frames):
            while len(in_flight) < self.window and (queue or next_index < len(frames)):
                if queue:
                    index = queue.pop(0)
                else:
                    index, next_index = next_index, next_index + 1
                while seq in in_flight or seq in late:
                    seq = (seq + 1) & 0xFF
                frame = make_frame(seq, frames[index])
                self.serial.write(frame)
                stats.bytes_sent += len(frame)
                in_flight[seq] = (index, time.monotonic())
                seq = (seq + 1) & 0xFF
            for frame in self._frames(time.monotonic() + 0.05):
                try:
                    answer = parse_frame(frame, config)
                except LinkError:
                    stats.errors["bad frame"] = stats.errors.get("bad frame", 0) + 1
                    continue
                if not isinstance(answer, Result):
                    continue
                if answer.seq in in_flight:
                    index, _ = in_flight.pop(answer.seq)
                elif answer.seq in late:
                    index = late.pop(answer.seq)      # a slow board (a loaded simulation): still a good answer
                    # ...and the timeout was too short for it: wait longer from now on, not resend more.
                    self.answer_timeout = min(2 * self.answer_timeout, MAX_ANSWER_TIMEOUT)
                    stats.answer_timeout = self.answer_timeout
                    if answer.status != Status.OK or results[index] is not None:
                        continue
                else:
                    continue
                if answer.status != Status.OK:
                    stats.errors[answer.status.name] = stats.errors.get(answer.status.name, 0) + 1
                    self._resend(index, tries, queue, stats)
                    continue
                if results[index] is None:
                    results[index] = answer
                    done += 1
                    if index in queue:
                        queue.remove(index)          # answered late: its resend is not needed
                    if on_result is not None:
                        on_result(index, answer)
            now = time.monotonic()
            for key, (index, sent_at) in list(in_flight.items()):
                # Each resend of a sample waits twice as long: a board slower than the timeout (a
                # simulation on a loaded machine) is waited for rather than flooded.
                if now - sent_at > self.answer_timeout * (1 << tries.get(index, 0)):
                    del in_flight[key]
                    if results[index] is not None:
                        continue                      # answered late under an older sequence number
                    late[key] = index
                    if len(late) > 128:
                        del late[next(iter(late))]
                    stats.errors["no answer"] = stats.errors.get("no answer", 0) + 1
                    self._resend(index, tries, queue, stats)
        self._seq = seq
        stats.samples += len(frames)
        stats.seconds += time.monotonic() - start
        return results

    def _resend(self, index, tries, queue, stats):
        tries[index] = tries.get(index, 0) + 1
        if tries[index] > self.retries:
            raise OSError(f"sample {index}: no good answer after {self.retries} resends; errors so far "
                          f"{stats.errors}")
        stats.resent += 1
        queue.append(index)
