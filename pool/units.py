"""Human units for the terminal and alerts (the dashboard's JavaScript follows the same rules):
hashrates H/s … EH/s, difficulties with k/M/G/T/P/E, durations up to billions of years,
probabilities as plain percentages ("0.0000167 %") and as "1 in 6,000,000"."""

from __future__ import annotations

import math

from .odds import DAY, YEAR

_SI = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"]


def _sig(value: float, digits: int = 3) -> str:
    """`value` (>= 0) to `digits` significant digits, in plain decimal notation."""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    # Rounding can add a digit (9.995 -> 10.00): drop the extra decimal.
    if decimals and len(text.replace(".", "").lstrip("0")) > digits:
        text = f"{value:.{decimals - 1}f}"
    return text


def _scaled(value: float) -> tuple[float, str]:
    index = 0
    while abs(value) >= 999.5 and index < len(_SI) - 1:
        value /= 1000
        index += 1
    return value, _SI[index]


def format_hashrate(hashes_per_second: float) -> str:
    """1.21e12 -> "1.21 TH/s"."""
    if not math.isfinite(hashes_per_second) or hashes_per_second <= 0:
        return "0 H/s"
    value, prefix = _scaled(hashes_per_second)
    return f"{_sig(value)} {prefix}H/s"


def format_band(band: float | None) -> str:
    """A relative 1σ band: 0.08 -> "± 8%"; none (no shares) -> ""."""
    if band is None:
        return ""
    percent = 100 * band
    return f"± {percent:.0f}%" if percent >= 10 else f"± {_sig(percent, 2)}%"


def format_hashrate_band(hashes_per_second: float, band: float | None) -> str:
    """"1.21 TH/s ± 8%"."""
    text = format_hashrate(hashes_per_second)
    return f"{text} {format_band(band)}" if band is not None and hashes_per_second > 0 else text


def format_difficulty(difficulty: float | None) -> str:
    """83.1e12 -> "83.1 T"; 0.000123 -> "0.000123"; tiny values in e-notation."""
    if difficulty is None or not math.isfinite(difficulty) or difficulty <= 0:
        return "-"
    if difficulty >= 1:
        value, prefix = _scaled(difficulty)
        return f"{_sig(value)} {prefix}".rstrip()
    if difficulty >= 1e-6:
        return _sig(difficulty)
    return f"{difficulty:.2e}"


def format_duration(seconds: float | None) -> str:
    """45 -> "45 s"; 4e9 -> "136 years"; 8.6e18 -> "272 billion years"; None -> "never"."""
    if seconds is None or not math.isfinite(seconds):
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{_sig(seconds / 3600, 2)} hours"
    if seconds < YEAR:
        return f"{_sig(seconds / DAY, 3)} days"
    years = seconds / YEAR
    if years < 1000:
        return f"{_sig(years, 3)} years"
    if years < 1e6:
        return f"{years:,.0f} years"
    for scale, word in ((1e18, "quintillion"), (1e15, "quadrillion"), (1e12, "trillion"),
                        (1e9, "billion"), (1e6, "million")):
        if years >= scale:
            return f"{_sig(years / scale, 3)} {word} years"
    raise AssertionError("unreachable")


def format_probability(p: float) -> str:
    """As a percentage with 3 significant digits, never rounded to zero: "0.0000167 %"."""
    if p <= 0:
        return "0 %"
    percent = 100 * p
    if percent >= 99.95 and p < 1:
        return "> 99.9 %"
    if percent < 1e-9:
        return f"{percent:.2e} %"
    return f"{_sig(percent, 3)} %"


def format_one_in(p: float) -> str:
    """1.667e-7 -> "1 in 6,000,000"."""
    if p <= 0:
        return "never"
    n = 1 / p
    if n < 1.5:
        return "1 in 1"
    if n >= 1e15:
        return f"1 in {n:.2e}"
    rounded = round(n, 2 - math.floor(math.log10(n)))
    return f"1 in {rounded:,.0f}"
