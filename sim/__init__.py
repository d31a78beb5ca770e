"""The golden numpy model and the cocotb + Verilator sign-off."""
