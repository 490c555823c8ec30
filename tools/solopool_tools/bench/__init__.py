"""`solopool-bench`: a pool-agnostic Stratum V1 benchmark (submit throughput, new-block fan-out,
connections) and a fake bitcoind serving a recorded mainnet-difficulty template.

See docs/performance.md for what it measures, how, and the numbers.
"""

from .cli import main

__all__ = ["main"]
