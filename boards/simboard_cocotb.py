"""cocotb side of the simulated board (:mod:`.simboard`): a pty bridged to the design's UART pins.

Run by :class:`~.simboard.SimulatedBoard` through :func:`spikeforge.sim.verilator.test`; its job comes
in environment variables (the pty name goes to ``SPIKEFORGE_SIMBOARD_PORT_FILE``; the run ends when
``SPIKEFORGE_SIMBOARD_STOP_FILE`` appears). At the end it writes ``SPIKEFORGE_SIMBOARD_WIRE_FILE``:
what crossed the wire, in clock cycles since reset: ``rx_frames`` (host to board: ``[cycle, kind]``
when a frame's first byte starts), ``tx_frames`` (board to host: ``[cycle, kind]`` when a frame's
closing ``END`` has been sent), and the byte counts ``rx_bytes``, ``tx_bytes``.
"""

import json
import os
import time
import tty
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge
from cocotb.utils import get_sim_time

END = 0xC0
#: The clock period the simulation runs (the board's real clock only scales the results).
PERIOD_NS = 10

#: Cycles between polls of the pty while nothing is happening on the wire.
POLL_CYCLES = 500


@cocotb.test()
async def serve(dut):
    divisor = int(os.environ.get("SPIKEFORGE_SIMBOARD_DIVISOR", "8"))
    port_file = Path(os.environ["SPIKEFORGE_SIMBOARD_PORT_FILE"])
    stop_file = Path(os.environ["SPIKEFORGE_SIMBOARD_STOP_FILE"])
    drop = int(os.environ.get("SPIKEFORGE_SIMBOARD_DROP_RX_BYTE", "-1"))
    wire_file = os.environ.get("SPIKEFORGE_SIMBOARD_WIRE_FILE")
    wire = {"rx_frames": [], "tx_frames": [], "rx_bytes": 0, "tx_bytes": 0}

    def cycle():
        return int(get_sim_time(unit="ns")) // PERIOD_NS

    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    dut.rx.value = 1
    dut.rst.value = 1
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    port_file.write_text(os.ttyname(slave) + "\n")

    pending = deque()
    received = [0]

    async def host_to_board():
        previous = END
        while True:
            if not pending:
                await ClockCycles(dut.clk, POLL_CYCLES)
                continue
            byte = pending.popleft()
            index = received[0]
            received[0] += 1
            if index == drop:
                continue                    # the wire lost it
            if previous == END and byte != END:
                wire["rx_frames"].append([cycle(), byte])
            previous = byte
            wire["rx_bytes"] += 1
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                dut.rx.value = bit
                await ClockCycles(dut.clk, divisor)

    async def board_to_host():
        kind = None
        while True:
            await FallingEdge(dut.tx)
            await ClockCycles(dut.clk, divisor + divisor // 2)
            byte = 0
            for i in range(8):
                byte |= int(dut.tx.value) << i
                await ClockCycles(dut.clk, divisor)
            os.write(master, bytes([byte]))
            wire["tx_bytes"] += 1
            if byte == END:
                if kind is not None:
                    wire["tx_frames"].append([cycle(), kind])
                kind = None
            elif kind is None:
                kind = byte

    cocotb.start_soon(host_to_board())
    cocotb.start_soon(board_to_host())
    idle_polls = 0
    while not stop_file.exists():
        try:
            chunk = os.read(master, 4096)
        except (BlockingIOError, OSError):
            chunk = b""
        pending.extend(chunk)
        await ClockCycles(dut.clk, POLL_CYCLES)
        # Let wall time pass while the host is quiet, so that simulated time does not race ahead of it.
        idle_polls = 0 if chunk or pending else idle_polls + 1
        if idle_polls > 20:
            time.sleep(0.001)
    os.close(master)
    os.close(slave)
    if wire_file:
        Path(wire_file).write_text(json.dumps(wire))
