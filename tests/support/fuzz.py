"""The Hypothesis settings every fuzz test starts from: reproducible (derandomized, no example
database), no deadline (a batch of inputs per example), and a failing example printed."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
