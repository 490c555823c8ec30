"""What the miners did: share counts, best shares, hashrate estimates and found blocks, kept in
memory for the API and persisted to one SQLite file in data_dir so a restart loses nothing.

- `records`: the plain records (workers, addresses, minute buckets, best shares, found blocks);
- `estimates`: hashrate and its ±1σ band from those records, pure arithmetic;
- `store`: the SQLite file, its schema and migrations (used only on one writer thread);
- `tracker`: `Stats`, listening to the pool's events, answering the API's queries, flushing;
- `confirmations`: following found blocks on the node (orphaned, back in the chain, matured).

It does not import the Stratum side: it reads miners through `pool.events.MinerView`.
"""

from .estimates import HISTORY_BIN_SECONDS, WINDOWS, Estimate, combine, estimate
from .records import MATURITY, BlockRecord, WorkerStats, coinbase_value
from .store import SCHEMA_VERSION, StatsError
from .tracker import Stats

__all__ = [
    "HISTORY_BIN_SECONDS",
    "MATURITY",
    "SCHEMA_VERSION",
    "WINDOWS",
    "BlockRecord",
    "Estimate",
    "Stats",
    "StatsError",
    "WorkerStats",
    "coinbase_value",
    "combine",
    "estimate",
]
