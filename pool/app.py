"""Wires the parts together: node adapter, template source, jobs, Stratum server, blocks."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from .blocks import ACCEPTED, BlockSpool, BlockSubmitter, FoundBlock
from .config import Config
from .consensus.address import CHAINS, AddressError, address_to_script, is_supported_payout
from .events import Events
from .jobs import JobManager, Template
from .node import NodeAuthError, NodeClient, NodeError, NodeRPCError, NodeUnreachable
from .shares import Share
from .stratum.server import StratumServer
from .stratum.session import AddressRefused, Session
from .work import TemplateSource

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The pool cannot start; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # 2 when the fix is in the config file


def make_node(config: Config) -> NodeClient:
    n = config.node
    return NodeClient(
        n.rpc_url,
        rpc_user=n.rpc_user,
        rpc_password=n.rpc_password,
        cookie_file=n.rpc_cookie_file,
        timeout=n.rpc_timeout_seconds,
    )


class Pool:
    """The running pool; also what each Stratum session calls back into (`PoolServices`)."""

    def __init__(self, config: Config) -> None:
        self.full_config = config
        self.config = config.stratum
        self.node = make_node(config)
        self.jobs = JobManager(config.pool.coinbase_tag.encode())
        self.spool = BlockSpool(config.pool.data_dir / "blocks")
        self.events = Events()
        self.submitter = BlockSubmitter(self.node, self.spool, on_final=self._block_final)
        self.stratum = StratumServer(
            self, on_connect=self.events.connect, on_disconnect=self.events.disconnect
        )
        self.source = TemplateSource(self.node, config.node, self._new_template)
        self.chain = ""
        self._payouts: dict[str, bytes] = {}
        self._stopping = asyncio.Event()
        self.started_at = time.time()
        self.shares_accepted = 0
        self.shares_rejected = 0

    # --- start-up -------------------------------------------------------------------------------

    async def check_node(self) -> None:
        """Learn the chain from the node; refuse to start with one clear reason."""
        url = self.node.display_url
        node_cfg = self.full_config.node
        cookie = node_cfg.rpc_cookie_file
        if node_cfg.cookie_guessed and cookie is not None and not cookie.exists():
            raise StartupError(
                f"no RPC login configured and no cookie at {cookie}: set [node] rpc_cookie_file "
                "to your node's .cookie, or rpc_user and rpc_password",
                exit_code=2,
            )
        try:
            info = await self.node.get_blockchain_info()
        except NodeAuthError as exc:
            raise StartupError(str(exc), exit_code=2) from None
        except NodeUnreachable:
            raise StartupError(
                f"cannot reach the node's RPC at {url}: is bitcoind running with server=1, and "
                "is [node] rpc_url right?"
            ) from None
        except NodeError as exc:
            raise StartupError(f"the node at {url} answered with an error: {exc}") from None
        chain = str(info.get("chain"))
        if chain not in CHAINS:
            raise StartupError(f"the node is on chain {chain!r}, which solopool does not know")
        self.chain = chain
        if chain == "main" and info.get("initialblockdownload"):
            progress = 100 * float(info.get("verificationprogress", 0))
            raise StartupError(
                f"the node is still in initial block download ({progress:.1f}% verified); "
                "start solopool when it has caught up"
            )
        try:
            await self.node.get_block_template()
        except NodeRPCError as exc:
            raise StartupError(
                f"the node cannot give a block template yet: {exc.message}"
            ) from None
        except NodeError as exc:
            raise StartupError(f"getblocktemplate failed: {exc}") from None
        log.info("node %s: chain %s, height %s", url, chain, info.get("blocks"))

    async def start(self) -> None:
        await self.check_node()
        try:
            await asyncio.to_thread(self.spool.prepare)
        except OSError as exc:
            raise StartupError(
                f"cannot use [pool] data_dir {self.full_config.pool.data_dir}: {exc.strerror}",
                exit_code=2,
            ) from None
        resubmitted = await self.submitter.resubmit_pending()
        if resubmitted:
            log.warning("resubmitting %d spooled block(s) from an earlier run", resubmitted)
        if not await self.source.update("start-up"):
            raise StartupError(f"could not get a block template: {self.source.last_error}")
        try:
            await self.stratum.start()
        except OSError as exc:
            cfg = self.config
            raise StartupError(
                f"cannot listen for miners on {cfg.host}:{cfg.port}: {exc.strerror}; is another "
                "pool running there? Change [stratum] port or host",
                exit_code=2,
            ) from None
        self.source.start()

    async def stop(self) -> None:
        await self.stratum.close()
        await self.source.stop()
        await self.submitter.drain(timeout=30)
        self.node.close()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stopping.set)
            except (NotImplementedError, RuntimeError):
                pass
        await self.start()
        try:
            await self._stopping.wait()
            log.info("shutting down")
        finally:
            await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    # --- templates --------------------------------------------------------------------------------

    def _new_template(self, template: Template) -> None:
        started = time.perf_counter()
        clean = self.jobs.set_template(template)
        sent = self.stratum.broadcast(clean)
        self.events.template(template, clean)
        if clean:
            log.info(
                "sent height %d jobs to %d miner(s) in %.1f ms",
                template.height, sent, 1000 * (time.perf_counter() - started),
            )

    async def _block_final(self, block: FoundBlock) -> None:
        self.events.block_final(block)
        if block.status == ACCEPTED:
            # Do not wait for longpoll/ZMQ: a stale template after our own block is wasted work.
            await self.source.update("our block")

    # --- PoolServices ----------------------------------------------------------------------------

    async def resolve_payout(self, address: str) -> bytes:
        cached = self._payouts.get(address)
        if cached is not None:
            return cached
        try:
            script = address_to_script(address, self.chain)
            if not is_supported_payout(script):
                raise AddressError(
                    "only P2PKH, P2SH, P2WPKH, P2WSH and P2TR payouts are supported (outputs to "
                    "future witness versions can be spent by anyone today)"
                )
        except AddressError as exc:
            raise AddressRefused(
                f"{address!r} is not a valid {self.chain} address: {exc}"
            ) from None
        try:
            info: dict[str, Any] = await self.node.validate_address(address)
        except NodeError as exc:
            # Our decoding is exact; the node's is a cross-check we can do later.
            log.warning("could not cross-check %s with the node (%s)", address, exc)
            return script
        if not info.get("isvalid"):
            reason = info.get("error") or "invalid address"
            raise AddressRefused(f"the node says {address} is not valid: {reason}")
        if info.get("scriptPubKey") != script.hex():
            log.error(
                "payout script mismatch for %s: ours %s, node %s",
                address, script.hex(), info.get("scriptPubKey"),
            )
            raise AddressRefused(f"cannot build a payout for {address}; please report this")
        self._payouts[address] = script
        return script

    def share_accepted(self, session: Session, share: Share, difficulty: float) -> None:
        self.shares_accepted += 1
        self.events.share(session, share, difficulty)

    def share_rejected(self, session: Session, code: int, reason: str) -> None:
        self.shares_rejected += 1
        self.events.reject(session, code, reason)

    def block_found(self, session: Session, share: Share) -> None:
        job = share.job
        extranonce = session.extranonce1 + share.extranonce2
        block = FoundBlock(
            height=job.template.height,
            hash=share.block_hash,
            hex=job.block(share.header, extranonce).hex(),
            worker=next(iter(session.workers), ""),
            address=session.address or "",
            found_at=time.time(),
        )
        log.warning(
            "BLOCK FOUND height=%d hash=%s worker=%s; submitting",
            block.height, block.hash, block.worker,
        )
        self.stratum.run_soon(self._spool_and_submit(block))

    async def _spool_and_submit(self, block: FoundBlock) -> None:
        await self.submitter.found(block)
        self.events.block_found(block)
