"""The SOMA state machine (spec/protocol.md) as pure, deterministic Python.

No Ray, no I/O, no clock and no randomness except seeds taken from the chain.
"""
