"""Amaranth HDL: the pipelined, event-driven iLIF accelerator."""
