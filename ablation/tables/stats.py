"""Intervals over seeds for the study tables: Student t, exact for any whole number of degrees of freedom.

`t_quantile` inverts the closed-form t distribution function of integer degrees of freedom
(Abramowitz & Stegun 26.7.3 for odd, 26.7.4 for even) by bisection on the angle theta = atan(t / sqrt(df)),
so the library needs no scipy; `tests/test_tables.py` checks it against `scipy.stats.t.ppf`.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import lru_cache

LEVEL = 0.95  # every interval in the tables
_BISECTIONS = 200  # halvings of [0, pi/2]: far past float64 resolution


def _central_mass(theta: float, df: int) -> float:
    """P(|T| <= sqrt(df) tan(theta)) for T ~ Student t with `df` (>= 1, whole) degrees of freedom."""
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # A&S 26.7.3: (2/pi)[theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)]
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2.0 / math.pi * (theta + s * total)
    total, term = 0.0, 1.0  # A&S 26.7.4: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


@lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (0.5 <= p < 1) of Student's t with `df` whole degrees of freedom."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile: p must be in [0.5, 1), got {p}")
    if df < 1 or int(df) != df:
        raise ValueError(f"t_quantile: df must be a whole number >= 1, got {df}")
    target, low, high = 2.0 * p - 1.0, 0.0, math.pi / 2
    for _ in range(_BISECTIONS):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        low, high = (mid, high) if _central_mass(mid, int(df)) < target else (low, mid)
    return math.sqrt(df) * math.tan(0.5 * (low + high))


@dataclass(frozen=True)
class Interval:
    """An estimate and its `LEVEL` confidence interval (None without one), over n values."""

    estimate: float
    low: float | None
    high: float | None
    n: int

    @property
    def half(self) -> float | None:
        return None if self.high is None else self.high - self.estimate

    @property
    def significant(self) -> bool | None:
        """Whether the interval excludes 0 (None without an interval)."""
        return None if self.low is None else not self.low <= 0.0 <= self.high


def mean_interval(values: list[float], level: float = LEVEL) -> Interval:
    """Mean of `values` with the Student t interval mean +- t_{(1+level)/2, n-1} s / sqrt(n); no interval
    for a single value."""
    if not values:
        raise ValueError("mean_interval: no values")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None, None, len(values))
    half = t_quantile(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def paired_interval(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> Interval | None:
    """a - b over the seeds both have (paired by seed value): the t interval of the per-seed differences;
    None when no seed is shared."""
    seeds = sorted(set(a) & set(b))
    return mean_interval([a[s] - b[s] for s in seeds], level) if seeds else None


__all__ = ["LEVEL", "Interval", "t_quantile", "mean_interval", "paired_interval"]
