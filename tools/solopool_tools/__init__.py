"""solopool's tools, kept out of the product package: `solopool-bench` (a pool-agnostic Stratum V1
benchmark with a fake node) and `solopool-miner` (a CPU test miner). They drive `pool`; nothing
in `pool` imports them."""

__version__ = "0.1.0"
