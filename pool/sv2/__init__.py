"""Stratum V2: binary codec, Noise transport and the pool's certificate.

Pure protocol code with no knowledge of the pool's serving path: it imports only
pool.consensus, the standard library, coincurve (libsecp256k1) and cryptography.
"""
