"""What the tests share: a regtest node, the one pool-process starter, a Stratum test client,
share and nonce helpers, fault and watch helpers. Test modules import from here, never from
one another."""
