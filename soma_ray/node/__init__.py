"""The pure parts of a validator node: mempool, executor, catch-up planning; no Ray, no I/O, no clock."""
