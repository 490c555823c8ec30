"""solopool: a Stratum V1 solo-mining pool for your own Bitcoin node."""

__version__ = "0.1.0"
