"""Pure consensus code: serialization, hashing, scripts, addresses, targets, merkle, coinbase.

Nothing in this package does I/O; every function is deterministic and unit-tested against
vectors from real blocks and the BIPs.
"""
