"""The host side of the link: classify samples on a board over a serial port (pyserial).

:class:`BoardClient` keeps up to ``window`` sample frames in flight (the board answers in order; a
window of 2 keeps the link busy while the board computes), matches answers by sequence number,
and resends a sample whose answer is an error (:class:`~.link.Status`) or does not come within
``answer_timeout`` seconds. The same client talks to a real board and to the simulated board's
pseudo-terminal.
"""

import time
from dataclasses import dataclass, field

from .link import LinkConfig, LinkError, Result, SlipStreamDecoder, Status, info_request, parse_frame, sample_frame
from spikeforge.ir.errors import InputError

__all__ = ["BoardClient", "RunStats", "CANDIDATE_BAUDS"]

#: Tried in this order when the baud rate is not given.
CANDIDATE_BAUDS = (1_000_000, 115200, 3_000_000, 921600, 460800, 230400)


@dataclass
class RunStats:
    """What a :meth:`BoardClient.classify` run measured at the host."""
    samples: int = 0
    seconds: float = 0.0
    resent: int = 0
    errors: dict = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


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

    def classify(self, samples, on_result=None, stats: RunStats | None = None) -> list:
        """Classify raw samples (each ``in_features`` bytes); return one :class:`~.link.Result` per sample.

        ``on_result(index, result)`` is called as answers arrive (in order).

        Raises
        ------
        ValueError
            A sample of the wrong size.
        OSError
            The board stopped answering (``retries`` resends of one sample did not help).
        """
        config = self.config
        frames = []
        for index, sample in enumerate(samples):
            data = bytes(bytearray(int(v) for v in sample.reshape(-1))) if hasattr(sample, "reshape") \
                else bytes(sample)
            if len(data) != config.in_features:
                raise InputError(f"sample {index} has {len(data)} bytes; the board takes {config.in_features}")
            frames.append(data)
        stats = stats if stats is not None else RunStats()
        results = [None] * len(frames)
        next_index = 0
        in_flight = {}          # seq -> (index, sent_at)
        tries = {}              # index -> resends so far
        queue = []              # indices to resend first
        seq = 0
        done = 0
        start = time.monotonic()
        while done < len(frames):
            while len(in_flight) < self.window and (queue or next_index < len(frames)):
                if queue:
                    index = queue.pop(0)
                else:
                    index, next_index = next_index, next_index + 1
                while seq in in_flight:
                    seq = (seq + 1) & 0xFF
                self.serial.write(sample_frame(seq, frames[index]))
                in_flight[seq] = (index, time.monotonic())
                seq = (seq + 1) & 0xFF
            for frame in self._frames(time.monotonic() + 0.05):
                try:
                    answer = parse_frame(frame, config)
                except LinkError:
                    stats.errors["bad frame"] = stats.errors.get("bad frame", 0) + 1
                    continue
                if not isinstance(answer, Result) or answer.seq not in in_flight:
                    continue
                index, _ = in_flight.pop(answer.seq)
                if answer.status != Status.OK:
                    stats.errors[answer.status.name] = stats.errors.get(answer.status.name, 0) + 1
                    self._resend(index, tries, queue, stats)
                    continue
                if results[index] is None:
                    results[index] = answer
                    done += 1
                    if on_result is not None:
                        on_result(index, answer)
            now = time.monotonic()
            for key, (index, sent_at) in list(in_flight.items()):
                if now - sent_at > self.answer_timeout:
                    del in_flight[key]
                    stats.errors["no answer"] = stats.errors.get("no answer", 0) + 1
                    self._resend(index, tries, queue, stats)
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
