"""Background tasks restart after a failure (pool/tasks.py); the open-file arithmetic
(pool/fdlimit.py)."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest

from pool.fdlimit import FD_RESERVE, _nr_open, connection_limit, raise_open_file_limit
from pool.tasks import Supervisor, cancel_and_wait, supervised


async def test_a_failing_task_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"bug {runs}")
        done.set()

    task = supervised("flaky", flaky, first_delay=0.01)
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.wait_for(task, 10)  # it returned normally: not started again
    assert runs == 3
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(";")[0] for r in failures] == ["flaky failed"] * 2
    assert all(r.exc_info is not None for r in failures)  # with the traceback


async def test_a_supervised_task_stops_when_cancelled() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = supervised("forever", forever)
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("configured", "open_files", "expected"),
    [
        (20000, 1024, 1024 - FD_RESERVE),
        (20000, 256, 256 - FD_RESERVE),
        (100, 1024, 100),  # the configured limit is lower: it stands
        (20000, 64, 32),  # a tiny limit: half kept back
        (20000, 1 << 20, 20000),
    ],
)
def test_connection_limit_keeps_a_reserve(configured: int, open_files: int, expected: int) -> None:
    assert connection_limit(configured, open_files) == expected


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = before[1]
    # An unlimited hard limit is raised to the kernel's ceiling for one process.
    expected = _nr_open() if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(expected, 1024) // 2, hard))
        assert raise_open_file_limit() == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


async def test_one_tree_of_supervisors_holds_every_task() -> None:
    root = Supervisor()
    part = root.child("part")
    forever = asyncio.Event()
    own = root.start("own", forever.wait)
    theirs = part.start("theirs", forever.wait)
    once = part.once("once", forever.wait())
    assert part.name == "pool.part"
    assert root.running() == {own, theirs, once}
    await part.stop()  # a part stops its own, in its turn...
    assert theirs.cancelled() and once.cancelled() and not own.done()
    assert root.running() == {own}
    late = part.start("late", forever.wait)
    await root.stop()  # ...and the root ends whatever is left, the children's too
    assert own.cancelled() and late.cancelled()
    assert root.running() == set()


async def test_stop_goes_on_without_a_task_that_ignores_its_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A library that loses a cancellation must not hang the shutdown: the stop waits a
    # bounded time, names the task and goes on; well-behaved tasks end as before.
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # swallowed, as a buggy library might

    async def polite() -> None:
        await asyncio.sleep(10)

    stuck = asyncio.create_task(stubborn(), name="stubborn")
    fine = asyncio.create_task(polite(), name="polite")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="pool.tasks"):
        async with asyncio.timeout(5):
            await cancel_and_wait([stuck, fine], "test", seconds=0.2)
    assert fine.cancelled() and not stuck.done()
    assert "test: task stubborn did not end within 0.2 s" in caplog.text
    release.set()
    stuck.cancel()
    await asyncio.wait([stuck], timeout=5)
    assert stuck.done()
