"""Board tops, UART link, bitstream builds and reports, host client."""
