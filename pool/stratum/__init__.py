"""Stratum V1: line framing, the per-connection session state machine, and the TCP server."""
