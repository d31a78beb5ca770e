"""The simulated board: the board design (UART and all) under cocotb + Verilator, on a pseudo-terminal.

``spikeforge simboard NET`` starts one and prints its port; ``spikeforge run --port <pty>`` talks to
it exactly as to a real board (at its defaults): the cocotb test
(:mod:`.simboard_cocotb`) opens a pty, drives the design's ``rx`` pin bit by bit with what the host
writes, and writes back what it samples on ``tx``. By default it is an iCEBreaker-like board: a
12 MHz clock and the link at the rate a real one gets from it (3 Mbaud: 4 clock cycles per bit);
``board=`` takes a board's clock and baud rate (``clk_freq=`` a PLL's). The framing, the UART, the
batch buffer, the counters and the accelerator are the real ones; only wall time differs (a
simulation runs thousands of times slower): :attr:`SimulatedBoard.wire` records what happened on the
wire in clock cycles, so rates can be measured in the board's own time.

    with SimulatedBoard(net, "build/simboard") as board:
        print(board.port)          # /dev/pts/N
        ...                        # BoardClient(board.port), or `spikeforge run --port /dev/pts/N`
"""

import json
import os
import shutil
import threading
import time
from pathlib import Path

from amaranth.back import verilog

from spikeforge.hdl import Accelerator
from spikeforge.ir.atomic import write_json, write_text
from spikeforge.ir.fingerprint import identity
from spikeforge.sim import verilator
from spikeforge.ir.errors import ExternalToolError
from .host import SIMULATED_BOARD_FORMAT
from .link import LinkConfig
from .platforms import board_info
from .serial import SerialAccelerator, link_config_for
from .uart import baud_divisor, board_baud

__all__ = ["SIM_CLOCK_HZ", "SIM_BOARD", "SIM_BATCH_DEPTH", "write_verilog", "board_timing", "SimulatedBoard"]

#: The simulated board's defaults: an iCEBreaker's 12 MHz clock and its link (3 Mbaud, 4 cycles a bit).
SIM_CLOCK_HZ = 12_000_000
SIM_BOARD = "ICEBreakerPlatform"
#: Samples the simulated board's batch buffer holds by default.
SIM_BATCH_DEPTH = 16
TOPLEVEL = "board"


def board_timing(board: str | None = None, clk_freq: float | None = None, baud: int | None = None) -> tuple:
    """``(clk_freq, baud, divisor)`` of a simulated ``board`` (a name ``spikeforge build`` takes; default the
    iCEBreaker) at ``clk_freq`` (default its oscillator), with ``baud`` (default its bridge's fastest)."""
    platform = board_info(board).platform_class.__name__ if board else SIM_BOARD
    if clk_freq is None:
        clk_freq = board_info(board).clock_hz if board else SIM_CLOCK_HZ
    baud = baud or board_baud(platform, clk_freq)
    return clk_freq, baud, baud_divisor(clk_freq, baud)


def write_verilog(net, out_dir, *, lanes=None, scores=True, timeout_cycles=400_000, board=None, clk_freq=None,
                  baud=None, batch_depth=SIM_BATCH_DEPTH) -> tuple:
    """Write ``<out_dir>/board.v`` (the :class:`~.serial.SerialAccelerator` for ``net``); return (path, config, divisor)."""
    accelerator = Accelerator(net, lanes)
    clk_freq, baud, divisor = board_timing(board, clk_freq, baud)
    config = link_config_for(accelerator, in_features=net.in_features, timesteps=net.timesteps,
                             clk_freq=clk_freq, baud=baud, scores=scores, batch_depth=batch_depth)
    serial = SerialAccelerator(accelerator, config, timeout_cycles=timeout_cycles, divisor=divisor)
    text = verilog.convert(serial, name=TOPLEVEL, emit_src=False)
    path = write_text(Path(out_dir) / f"{TOPLEVEL}.v", text)
    return path, config, divisor


class SimulatedBoard:
    """Build (or reuse) and run the simulated board in a background thread; ``port`` is its pty.

    Parameters
    ----------
    net : Network
    work_dir : path
        Verilog, the Verilator build (reused when the design is unchanged) and the run's files.
    lanes : dict, optional
        Folding (default: automatic).
    drop_rx_byte : int, optional
        Fault injection: the simulated wire loses the host's byte with this index (0-based, counted
        over the whole run).
    board, clk_freq, baud : optional
        The board whose clock and link to simulate (see :func:`board_timing`).
    batch_depth : int
        Samples the batch buffer holds (0: no batch mode).
    network_path : path, optional
        Where ``net`` was loaded from (recorded in ``<work_dir>/report.json`` for people).
    build_root : path, optional
        Where Verilator builds go, one folder per design (default ``<work_dir>/sim_build``); a shared
        root also shares Verilator's compiled runtime between designs.
    """

    def __init__(self, net, work_dir, *, lanes=None, scores=True, drop_rx_byte=None, startup_timeout=600.0,
                 network_path=None, build_root=None, board=None, clk_freq=None, baud=None,
                 batch_depth=SIM_BATCH_DEPTH):
        self.board = board
        self.clk_freq = clk_freq
        self.baud = baud
        self.batch_depth = batch_depth
        #: After the board stopped: what crossed the wire, in clock cycles (see :mod:`.simboard_cocotb`).
        self.wire = None
        self.net = net
        self.build_root = Path(build_root) if build_root is not None else None
        self.network_path = network_path
        self.work_dir = Path(work_dir)
        self.lanes = lanes
        self.scores = scores
        self.drop_rx_byte = drop_rx_byte
        self.startup_timeout = startup_timeout
        self.port = None
        self.config: LinkConfig | None = None
        self._thread = None
        self._error = None

    def __enter__(self):
        source, self.config, divisor = write_verilog(
            self.net, self.work_dir / "rtl", lanes=self.lanes, scores=self.scores, board=self.board,
            clk_freq=self.clk_freq, baud=self.baud, batch_depth=self.batch_depth)
        build_dir = verilator.build_dir_for(self.build_root or self.work_dir / "sim_build", [source], TOPLEVEL)
        built = verilator.build([source], TOPLEVEL, build_dir)
        run_dir = (self.work_dir / f"run-{os.getpid()}-{time.monotonic_ns()}").resolve()
        run_dir.mkdir(parents=True)
        self._port_file = run_dir / "port"
        self._stop_file = run_dir / "stop"
        env = {"SPIKEFORGE_SIMBOARD_PORT_FILE": str(self._port_file),
               "SPIKEFORGE_SIMBOARD_STOP_FILE": str(self._stop_file),
               "SPIKEFORGE_SIMBOARD_DIVISOR": str(divisor),
               "SPIKEFORGE_SIMBOARD_WIRE_FILE": str(run_dir / "wire.json")}
        if self.drop_rx_byte is not None:
            env["SPIKEFORGE_SIMBOARD_DROP_RX_BYTE"] = str(self.drop_rx_byte)

        def serve():
            try:
                verilator.test(built, "spikeforge.boards.simboard_cocotb", test_dir=run_dir, env=env)
            except Exception as error:      # reported by __exit__ / the wait below
                self._error = error

        self._thread = threading.Thread(target=serve, name="simulated-board", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        try:
            while not self._port_file.exists():
                if self._error is not None or not self._thread.is_alive():
                    raise ExternalToolError(f"the simulated board did not start: {self._error}")
                if time.monotonic() > deadline:
                    raise ExternalToolError("the simulated board did not open its pty in time")
                time.sleep(0.05)
        except BaseException:              # a failed start or Ctrl-C / SIGTERM: stop it, leave nothing behind
            self._stop_file.write_text("stop\n")
            self._thread.join(timeout=60)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        self.port = self._port_file.read_text().strip()
        # What this board runs, for `spikeforge run --network NET --build <work_dir>` to check.
        self.record_path = write_json(self.work_dir / "report.json", {
            "format": SIMULATED_BOARD_FORMAT, "version": 1, "port": self.port,
            "network": {**identity(self.net), **({"path": str(self.network_path)} if self.network_path else {})},
            "in_features": self.config.in_features, "classes": self.config.classes,
            "timesteps": self.config.timesteps, "baud": self.config.baud, "scores": self.config.scores,
            "clock_hz": self.config.clk_freq, "batch_depth": self.config.batch_depth,
            "compact_code_bits": self.config.code_bits})
        return self

    def __exit__(self, *exc):
        self._stop_file.write_text("stop\n")
        self._thread.join(timeout=60)
        wire_file = self._stop_file.parent / "wire.json"
        if wire_file.is_file():
            self.wire = json.loads(wire_file.read_text())
        if not self._thread.is_alive():
            shutil.rmtree(self._stop_file.parent, ignore_errors=True)     # this run's pty name and cocotb results
        if self._error is not None and exc[0] is None:
            raise ExternalToolError(f"the simulated board failed: {self._error}")
