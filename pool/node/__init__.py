"""The node layer: everything that talks to bitcoind, and nothing else.

- `rpc`: `NodeClient`, JSON-RPC calls off the event loop, with timeouts and clear errors;
- `proxy`: the one adapter to python-bitcoinrpc (fast answers, our credentials, nothing global);
- `nodeset`: several nodes in priority order, their health, confirming blocks on any;
- `templates`: `TemplateSource`, keeping the block template current and failing over;
- `discovery`: the node's cookie and ZMQ hashblock endpoint, when the config names neither;
- `errors`: the `NodeError` family.

It imports only `pool.consensus` and `pool.config` from the rest of the pool (a test checks):
templates reach the pool through the `on_template` callback.
"""

from .errors import (
    RPC_METHOD_NOT_FOUND,
    NodeAuthError,
    NodeError,
    NodeRPCError,
    NodeTimeout,
    NodeUnreachable,
    NodeWrongChain,
)
from .nodeset import NodeHealth, NodeSet
from .rpc import NodeClient
from .templates import TemplateSource

__all__ = [
    "RPC_METHOD_NOT_FOUND",
    "NodeAuthError",
    "NodeClient",
    "NodeError",
    "NodeHealth",
    "NodeRPCError",
    "NodeSet",
    "NodeTimeout",
    "NodeUnreachable",
    "NodeWrongChain",
    "TemplateSource",
]
