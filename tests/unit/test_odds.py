"""The odds arithmetic pinned at mainnet numbers, and the human units."""

from __future__ import annotations

import math

import pytest

from pool.odds import (
    DAY,
    YEAR,
    block_probability,
    chance_within,
    expected_seconds,
    network_hashrate,
    odds,
)
from pool.units import (
    format_band,
    format_difficulty,
    format_duration,
    format_hashrate,
    format_hashrate_band,
    format_one_in,
    format_probability,
)

TH = 1e12
EH = 1e18
D_1E14 = 1.0e14
D_600EH = 600 * EH * 600 / 2**32  # the difficulty at which the network does 600 EH/s


def test_network_hashrate_from_difficulty() -> None:
    # D = 1.0e14 at 600 s blocks implies 716 EH/s (hashrate = D * 2**32 / 600 s).
    assert network_hashrate(D_1E14) == pytest.approx(715.8 * EH, rel=1e-4)
    assert network_hashrate(D_600EH) == pytest.approx(600 * EH, rel=1e-12)


def test_100_th_against_600_eh_is_one_in_six_million_and_114_years() -> None:
    o = odds(100 * TH, D_600EH)
    assert o.block_probability == pytest.approx(1 / 6_000_000, rel=1e-9)
    assert o.one_in_blocks == pytest.approx(6_000_000, rel=1e-9)
    assert format_one_in(o.block_probability) == "1 in 6,000,000"
    assert format_probability(o.block_probability) == "0.0000167 %"
    assert o.expected_seconds is not None
    years = o.expected_seconds / YEAR
    assert years == pytest.approx(114.08, abs=0.01)
    assert not math.isclose(years, 11.4, rel_tol=0.05)  # the common misquote
    assert format_duration(o.expected_seconds) == "114 years"
    assert o.chance_year == pytest.approx(0.00873, abs=0.000005)
    assert format_probability(o.chance_year) == "0.873 %"


def test_1_th_against_600_eh() -> None:
    o = odds(1 * TH, D_600EH)
    assert o.block_probability == pytest.approx(1.667e-9, rel=1e-3)
    assert o.expected_seconds is not None
    assert o.expected_seconds / YEAR == pytest.approx(11_408, abs=1)
    assert format_duration(o.expected_seconds) == "11,408 years"
    assert o.chance_year == pytest.approx(8.77e-5, rel=1e-3)


# miner, hashrate, p per 600 s, p per day, p per year, expected time (years), as text
TABLE_D_1E14 = [
    ("1 TH/s", 1 * TH, 1.397e-9, 2.01e-7, 7.35e-5, 13_610, "13,610 years"),
    ("Bitaxe 1.2 TH/s", 1.2 * TH, 1.676e-9, 2.41e-7, 8.82e-5, 11_342, "11,342 years"),
    ("100 TH/s", 100 * TH, 1.397e-7, 2.01e-5, 0.00732, 136.1, "136 years"),
    ("S21 200 TH/s", 200 * TH, 2.794e-7, 4.02e-5, 0.01459, 68.0, "68.0 years"),
    # The reference table's NerdMiner row (6.98e-14 per block, 272 million years) is the figure
    # for 50 MH/s; 50 kH/s is a thousand times less likely (see the next test).
    ("NerdMiner 50 kH/s", 50e3, 6.98e-17, 1.01e-14, 3.67e-12, 272e9, "272 billion years"),
]


@pytest.mark.parametrize(("miner", "h", "p_block", "p_day", "p_year", "years", "text"),
                         TABLE_D_1E14, ids=[row[0] for row in TABLE_D_1E14])
def test_reference_table_at_difficulty_1e14(
    miner: str, h: float, p_block: float, p_day: float, p_year: float, years: float, text: str
) -> None:
    o = odds(h, D_1E14)
    assert o.block_probability == pytest.approx(p_block, rel=2e-3)
    # Per 600 s by the exponential formula: the same to many digits at these odds.
    assert chance_within(600, h, D_1E14) == pytest.approx(p_block, rel=2e-3)
    assert o.chance_day == pytest.approx(p_day, rel=5e-3)
    assert o.chance_year == pytest.approx(p_year, rel=5e-3)
    assert o.expected_seconds is not None
    assert o.expected_seconds / YEAR == pytest.approx(years, rel=1e-3)
    assert format_duration(o.expected_seconds) == text


def test_reference_nerdminer_row_is_the_50_mhs_figure() -> None:
    o = odds(50e6, D_1E14)
    assert o.block_probability == pytest.approx(6.98e-14, rel=2e-3)
    assert o.chance_day == pytest.approx(1.01e-11, rel=5e-3)
    assert o.expected_seconds is not None
    assert o.expected_seconds / YEAR == pytest.approx(272e6, rel=2e-3)


def test_formulas() -> None:
    d, h = 83_148_355_189_239.8, 1.2 * TH  # a 2024 difficulty and a Bitaxe
    assert expected_seconds(h, d) == pytest.approx(d * 2**32 / h)
    assert chance_within(DAY, h, d) == pytest.approx(1 - math.exp(-DAY * h / (d * 2**32)))
    assert block_probability(h, d) == pytest.approx(h / (d * 2**32 / 600))
    # Nothing hashing: never; more than the whole network (regtest): certain, not > 1.
    none = odds(0.0, d)
    assert none.block_probability == 0 and none.expected_seconds is None
    assert none.one_in_blocks is None and none.chance_year == 0
    regtest = odds(1e6, 4.656542373906925e-10)
    assert regtest.block_probability == 1.0 and regtest.chance_day == 1.0
    with pytest.raises(ValueError):
        network_hashrate(0)


def test_units() -> None:
    assert format_hashrate(1.21e12) == "1.21 TH/s"
    assert format_hashrate(999.6e12) == "1.00 PH/s"
    assert format_hashrate(600e18) == "600 EH/s"
    assert format_hashrate(52_000) == "52.0 kH/s"
    assert format_hashrate(0.5) == "0.500 H/s"
    assert format_hashrate(0) == "0 H/s"
    assert format_band(0.08) == "± 8.0%"
    assert format_band(0.158) == "± 16%"
    assert format_band(None) == ""
    assert format_hashrate_band(1.21e12, 0.08) == "1.21 TH/s ± 8.0%"
    assert format_difficulty(83.1e12) == "83.1 T"
    assert format_difficulty(2_310_000_000) == "2.31 G"
    assert format_difficulty(512) == "512"
    assert format_difficulty(0.000123) == "0.000123"
    assert format_difficulty(4.656542373906925e-10) == "4.66e-10"
    assert format_difficulty(None) == "-"
    assert format_duration(45) == "45 s"
    assert format_duration(600) == "10 min"
    assert format_duration(5 * 3600) == "5.0 hours"
    assert format_duration(3 * DAY) == "3.00 days"
    assert format_duration(None) == "never"
    assert format_probability(0.5) == "50.0 %"
    assert format_probability(0.99999) == "> 99.9 %"
    assert format_probability(1.0) == "100 %"
    assert format_probability(0) == "0 %"
    assert format_one_in(1.0) == "1 in 1"
    assert format_one_in(1 / 11_342.4) == "1 in 11,300"
