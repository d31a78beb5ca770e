"""The simulated board: the board design (UART and all) under cocotb + Verilator, on a pseudo-terminal.

``spikeforge simboard NET`` starts one and prints its port; ``spikeforge run --port <pty>`` talks to
it exactly as to a real board (at its defaults): the cocotb test
(:mod:`.simboard_cocotb`) opens a pty, drives the design's ``rx`` pin bit by bit with what the host
writes, and writes back what it samples on ``tx``. Only the bit time differs from a board (a few
clock cycles per bit, so the simulation is quick); the framing, the UART and the accelerator are the
real ones.

    with SimulatedBoard(net, "build/simboard") as board:
        print(board.port)          # /dev/pts/N
        ...                        # BoardClient(board.port), or `spikeforge run --port /dev/pts/N`
"""

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
from .top import SerialAccelerator, link_config_for

__all__ = ["SIM_DIVISOR", "write_verilog", "SimulatedBoard"]

#: Clock cycles per bit in the simulated board (a real board uses clk_freq / baud).
SIM_DIVISOR = 8
SIM_CLOCK_HZ = 12_000_000
TOPLEVEL = "board"


def write_verilog(net, out_dir, *, lanes=None, scores=True, timeout_cycles=400_000) -> tuple:
    """Write ``<out_dir>/board.v`` (the :class:`~.top.SerialAccelerator` for ``net``); return (path, config)."""
    accelerator = Accelerator(net, lanes)
    config = link_config_for(accelerator, in_features=net.in_features, timesteps=net.timesteps,
                             clk_freq=SIM_CLOCK_HZ, baud=SIM_CLOCK_HZ // SIM_DIVISOR, scores=scores)
    serial = SerialAccelerator(accelerator, config, timeout_cycles=timeout_cycles, divisor=SIM_DIVISOR)
    text = verilog.convert(serial, name=TOPLEVEL, emit_src=False)
    path = write_text(Path(out_dir) / f"{TOPLEVEL}.v", text)
    return path, config


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
    network_path : path, optional
        Where ``net`` was loaded from (recorded in ``<work_dir>/report.json`` for people).
    build_root : path, optional
        Where Verilator builds go, one folder per design (default ``<work_dir>/sim_build``); a shared
        root also shares Verilator's compiled runtime between designs.
    """

    def __init__(self, net, work_dir, *, lanes=None, scores=True, drop_rx_byte=None, startup_timeout=600.0,
                 network_path=None, build_root=None):
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
        source, self.config = write_verilog(self.net, self.work_dir / "rtl", lanes=self.lanes, scores=self.scores)
        build_dir = verilator.build_dir_for(self.build_root or self.work_dir / "sim_build", [source], TOPLEVEL)
        built = verilator.build([source], TOPLEVEL, build_dir)
        run_dir = (self.work_dir / f"run-{os.getpid()}-{time.monotonic_ns()}").resolve()
        run_dir.mkdir(parents=True)
        self._port_file = run_dir / "port"
        self._stop_file = run_dir / "stop"
        env = {"SPIKEFORGE_SIMBOARD_PORT_FILE": str(self._port_file),
               "SPIKEFORGE_SIMBOARD_STOP_FILE": str(self._stop_file),
               "SPIKEFORGE_SIMBOARD_DIVISOR": str(SIM_DIVISOR)}
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
            "timesteps": self.config.timesteps, "baud": self.config.baud, "scores": self.config.scores})
        return self

    def __exit__(self, *exc):
        self._stop_file.write_text("stop\n")
        self._thread.join(timeout=60)
        if not self._thread.is_alive():
            shutil.rmtree(self._stop_file.parent, ignore_errors=True)     # this run's pty name and cocotb results
        if self._error is not None and exc[0] is None:
            raise ExternalToolError(f"the simulated board failed: {self._error}")
