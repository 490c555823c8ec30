"""VarDiff: rounding, clamping and retargeting toward one share per `share_interval` seconds."""

from __future__ import annotations

import pytest

from pool.vardiff import (
    MAX_STEP,
    RETARGET_SECONDS,
    RETARGET_SHARES,
    VarDiff,
    round_difficulty,
)

MAINNET_DIFFICULTY = 86388558925171.01
REGTEST_DIFFICULTY = 4.656542373906925e-10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024.0, 1024),
        (1.0, 1),
        (1.4, 1),
        (1.6, 2),
        (999.7, 1000),
        (86388558925171.01, 86388558925171),
        (0.5, 0.5),
        (0.123456, 0.123),
        (0.00015, 0.00015),
        (0.000123456, 0.000123),
        (1e-5, 1e-5),
        (4.0e-9, 4.0e-9),
    ],
)
def test_round_difficulty(value: float, expected: float) -> None:
    rounded = round_difficulty(value)
    assert rounded == expected
    if value >= 1:
        assert type(rounded) is int  # sent as a JSON integer
    else:
        assert isinstance(rounded, float)


def test_clamp_to_min_and_max() -> None:
    vd = VarDiff(10, 0.001, 1e6, 0.0)
    assert vd.clamp(1e9) == 1_000_000
    assert type(vd.clamp(1e9)) is int
    assert vd.clamp(1e-9) == 0.001
    assert vd.clamp(50.4) == 50
    assert vd.clamp(0.0123456) == 0.0123


def test_clamp_to_network_difficulty() -> None:
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert vd.clamp(1e15, MAINNET_DIFFICULTY) == 86388558925171
    assert vd.clamp(5000, 100.0) == 100
    assert vd.clamp(5000, MAINNET_DIFFICULTY) == 5000


@pytest.mark.parametrize("wanted", [1e-12, 0.5, 5000.0, 1e20])
def test_network_ceiling_never_below_min(wanted: float) -> None:
    """On regtest the network difficulty is far below any useful share difficulty."""
    vd = VarDiff(10, 0.001, 1e6, 0.0)
    got = vd.clamp(wanted, REGTEST_DIFFICULTY)
    assert 0.001 <= got <= 1e6


def feed(vd: VarDiff, n: int, difficulty: float, current: float, start: float, end: float,
         network: float | None = None) -> list[float | int | None]:
    """n shares spread evenly over (start, end]."""
    return [
        vd.on_share(difficulty, current, start + (end - start) * (i + 1) / n, network)
        for i in range(n)
    ]


def test_no_retarget_before_window_is_complete() -> None:
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    results = feed(vd, RETARGET_SHARES - 1, 100, 100, 0.0, 1.0)
    assert results == [None] * (RETARGET_SHARES - 1)
    assert vd.shares == RETARGET_SHARES - 1


def test_retarget_up_toward_interval() -> None:
    # 20 shares of difficulty 100 in 50 s = 40 diff-1 shares/s; at one share per 10 s -> 400.
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    results = feed(vd, RETARGET_SHARES, 100, 100, 0.0, 50.0)
    assert results[:-1] == [None] * (RETARGET_SHARES - 1)
    assert results[-1] == 400
    assert type(results[-1]) is int
    assert vd.shares == 0 and vd.window_start == 50.0  # a new window starts


def test_retarget_down_after_time_window() -> None:
    # 1 share of difficulty 100 in 125 s -> 8 per 10 s, a 12.5x drop: limited to /4 = 25.
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert vd.on_share(100, 100, 125.0, None) == 25


def test_retarget_down_within_step() -> None:
    # 2 shares of difficulty 90 in 60 s -> 30 per 10 s: a 3x drop, inside the x4 step.
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert vd.on_share(90, 90, 30.0, None) is None
    assert vd.on_share(90, 90, RETARGET_SECONDS, None) == 30
    assert vd.shares == 0


def test_step_limited_to_max_step_up() -> None:
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    results = feed(vd, RETARGET_SHARES, 100, 100, 0.0, 0.01)  # absurdly fast
    assert results[-1] == 100 * MAX_STEP


def test_step_limited_to_max_step_fractional() -> None:
    vd = VarDiff(10, 1e-9, 1e15, 0.0)
    results = feed(vd, RETARGET_SHARES, 1e-8, 1e-8, 0.0, 0.01)
    assert results[-1] == pytest.approx(4e-8)
    assert isinstance(results[-1], float)


def test_no_change_within_tolerance() -> None:
    # 20 shares of difficulty 100 in 100 s: wanted 200 = 2x current, within tolerance.
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert feed(vd, RETARGET_SHARES, 100, 100, 0.0, 100.0)[-1] is None
    # 20 shares in 400 s: wanted 50 = current / 2, within tolerance.
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    results = feed(vd, RETARGET_SHARES, 100, 100, 0.0, 400.0)
    assert all(r is None for r in results)
    # on target exactly
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert all(r is None for r in feed(vd, RETARGET_SHARES, 100, 100, 0.0, 200.0))


def test_retarget_respects_max_and_network() -> None:
    vd = VarDiff(10, 0.001, 300, 0.0)
    assert feed(vd, RETARGET_SHARES, 100, 100, 0.0, 0.01)[-1] == 300
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert feed(vd, RETARGET_SHARES, 100, 100, 0.0, 0.01, network=250.0)[-1] == 250


def test_no_change_reported_when_clamped_to_current() -> None:
    vd = VarDiff(10, 0.001, 100, 0.0)
    assert feed(vd, RETARGET_SHARES, 100, 100, 0.0, 0.01)[-1] is None


def test_judged_difficulty_drives_the_estimate() -> None:
    """Shares judged at an older, lower job difficulty count for that lower difficulty."""
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    # 20 shares of difficulty 25 in 50 s while the current is 100: wanted 100 -> no change.
    assert feed(vd, RETARGET_SHARES, 25, 100, 0.0, 50.0)[-1] is None


def test_on_tick_lowers_silent_miner() -> None:
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert vd.on_tick(1024, RETARGET_SECONDS - 1, None) is None
    new = vd.on_tick(1024, RETARGET_SECONDS + 1, None)
    assert new == 256  # wanted ~ 1024 / 12, limited to one /4 step
    assert type(new) is int
    assert vd.window_start == RETARGET_SECONDS + 1
    assert vd.on_tick(256, RETARGET_SECONDS + 2, None) is None  # new window


def test_on_tick_waits_three_intervals_for_slow_targets() -> None:
    vd = VarDiff(30, 0.001, 1e15, 0.0)
    assert vd.on_tick(1024, 89.0, None) is None
    assert vd.on_tick(1024, 91.0, None) == 256


def test_on_tick_stops_at_minimum() -> None:
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    assert vd.on_tick(0.003, 61.0, None) == 0.001
    vd.reset(61.0)
    assert vd.on_tick(0.001, 200.0, None) is None


def test_on_tick_with_recent_shares_uses_their_rate() -> None:
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    # 5 shares of 100 in the first 20 s (under RETARGET_SHARES, under RETARGET_SECONDS) ...
    assert all(r is None for r in feed(vd, 5, 100, 100, 0.0, 20.0))
    # ... then silence: at 61 s the rate is 500/61 per s -> 82 per 10 s, within tolerance.
    assert vd.on_tick(100, 61.0, None) is None


def test_reset() -> None:
    vd = VarDiff(10, 0.001, 1e15, 0.0)
    feed(vd, 5, 100, 100, 0.0, 5.0)
    vd.reset(7.0)
    assert (vd.shares, vd.difficulty_sum, vd.window_start) == (0, 0.0, 7.0)
