"""Long-running background tasks that survive their own bugs: an unexpected exception is logged
with its traceback and the task started again after a backoff, instead of ending silently in
"Task exception was never retrieved" while the pool runs on without it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

log = logging.getLogger(__name__)

FIRST_RESTART_SECONDS = 0.5
MAX_RESTART_SECONDS = 30.0
HEALTHY_SECONDS = 60.0  # a run this long without failing starts the backoff over
STOP_SECONDS = 5.0  # how long a cancelled task may take to end before shutdown goes on without it


def supervised(
    name: str,
    run: Callable[[], Awaitable[None]],
    first_delay: float = FIRST_RESTART_SECONDS,
    max_delay: float = MAX_RESTART_SECONDS,
) -> asyncio.Task[None]:
    """A task running `run()` until it returns or is cancelled, restarting it when it raises."""
    return asyncio.create_task(_supervise(name, run, first_delay, max_delay), name=name)


async def _supervise(
    name: str, run: Callable[[], Awaitable[None]], first_delay: float, max_delay: float
) -> None:
    delay = first_delay
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() - started >= HEALTHY_SECONDS:
                delay = first_delay
            log.exception("%s failed; restarting it in %.1f s", name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


class Supervisor:
    """The background tasks of one owner, started and ended in one place: long-running ones
    `supervised` (restarted when they fail), one-off ones just kept until done. The pool's
    root supervisor (app.py) hands each part a `child`, so every background task of the process
    hangs off one tree: each part still stops its own in its turn, and the root ends whatever
    is left."""

    def __init__(self, name: str = "pool") -> None:
        self.name = name
        self.tasks: set[asyncio.Task[None]] = set()
        self.children: list[Supervisor] = []

    def child(self, name: str) -> Supervisor:
        """A supervisor for one part, stopped with this one."""
        part = Supervisor(f"{self.name}.{name}")
        self.children.append(part)
        return part

    def running(self) -> set[asyncio.Task[None]]:
        """Every task still running here and in the children."""
        tasks = set(self.tasks)
        for part in self.children:
            tasks |= part.running()
        return tasks

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `run()` until it returns or the supervisor stops, restarting it when it raises."""
        return self._keep(supervised(name, run))

    def once(self, name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Run `work` once (its failure is logged, never lost)."""

        async def logged() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.create_task(logged(), name=name)
        task.add_done_callback(lambda _: work.close())  # cancelled before it began: not leaked
        return self._keep(task)

    def _keep(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel every task still running (the children's too) and wait for them to end."""
        await cancel_and_wait(self.running(), self.name)


async def cancel_and_wait(
    tasks: Collection[asyncio.Task[Any]], owner: str, seconds: float = STOP_SECONDS
) -> None:
    """Cancel `tasks` and wait for them to end, for at most `seconds`: a task still running
    then (a library that lost the cancellation) is logged and left behind, rather than
    holding up the shutdown (a container gets 10 s from SIGTERM to SIGKILL)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: an error on the way out was logged by its owner
    for task in pending:
        log.warning(
            "%s: task %s did not end within %g s of being cancelled; stopping without it",
            owner, task.get_name(), seconds,
        )
