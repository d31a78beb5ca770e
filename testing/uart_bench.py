"""Bit-level UART drivers for Amaranth simulator testbenches."""


async def uart_send(ctx, line, payload, bit_cycles, *, gap_bits=0):
    """Drive ``payload`` onto ``line`` at ``bit_cycles`` clock cycles per bit (may be fractional)."""
    clock = 0.0
    elapsed = 0
    for byte in payload:
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1] * (1 + gap_bits)
        for bit in bits:
            ctx.set(line, bit)
            clock += bit_cycles
            cycles = round(clock) - elapsed
            elapsed += cycles
            await ctx.tick().repeat(cycles)


async def uart_receive(ctx, line, bit_cycles, count):
    """Sample ``count`` bytes from ``line``; a stop bit that is low raises AssertionError."""
    received = bytearray()
    for _ in range(count):
        if ctx.get(line):
            await ctx.tick().until(line == 0)
        await ctx.tick().repeat(round(bit_cycles * 1.5))
        byte = 0
        for i in range(8):
            byte |= ctx.get(line) << i
            await ctx.tick().repeat(round(bit_cycles))
        assert ctx.get(line) == 1, "stop bit is low"
        received.append(byte)
    return bytes(received)
