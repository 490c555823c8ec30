"""What can go wrong asking the node, as one exception family the rest of the pool catches."""

from __future__ import annotations

# bitcoind's answer to a method it does not have (rpc/protocol.h), e.g. getzmqnotifications
# on a node built without ZMQ.
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMETER = -8  # e.g. getblockhash: no block at that height


class NodeError(Exception):
    """Any failure to get an answer from the node."""


class NodeUnreachable(NodeError):
    """Connection refused, reset or timed out: the node is down or the URL is wrong."""


class NodeTimeout(NodeUnreachable):
    """The node took longer than the call's timeout to answer."""


class NodeAuthError(NodeError):
    """HTTP 401: wrong rpc_user/rpc_password or a stale cookie."""


class NodeRPCError(NodeError):
    """The node answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (RPC error {code})")
        self.code = code
        self.message = message


class NodeWrongChain(NodeError):
    """The node is on another network (or another chain with another genesis block) than the
    one the pool started on: its templates would pay addresses of the wrong network."""
