"""Statistics over seeds: mean, sample standard deviation, and the paired difference with a Student-t interval
(the t quantile from ``scipy.stats``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    from scipy import stats  # here: importing scipy.stats takes most of a second, which `sskt report --help` skips

    return float(stats.t.ppf(0.975, df))


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (n - 1 in the denominator; 0 when n = 1) and count."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 2) -> str:
        """``"mean +- std (n)"``, or ``"-"`` when empty."""
        if self.n == 0:
            return "-"
        return f"{self.mean:.{digits}f} +- {self.std:.{digits}f} ({self.n})"


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std and count of ``values`` (NaN mean for an empty sequence)."""
    n = len(values)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Summary(mean, math.sqrt(var), n)


@dataclass(frozen=True)
class PairedDiff:
    """Mean of the per-seed differences ``a - b`` with a 95% t interval (``low``/``high`` NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    def format(self, digits: int = 2) -> str:
        """``"+d [low, high] (n)"``, or ``"-"`` when no seed pairs up."""
        if self.n == 0:
            return "-"
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (1)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] ({self.n})"

    @property
    def significant(self) -> bool:
        """Whether the 95% interval excludes zero."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def paired_diff(a: Mapping[int, float], b: Mapping[int, float]) -> PairedDiff:
    """Paired difference of two result sets keyed by seed, over the seeds both contain.

    ``d_s = a_s - b_s``; the interval is ``mean(d) +- t_{0.975}(n - 1) * std(d) / sqrt(n)``.
    """
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    s = summarize(diffs)
    if s.n < 2:
        return PairedDiff(s.mean, math.nan, math.nan, s.n)
    half = t_quantile_975(s.n - 1) * s.std / math.sqrt(s.n)
    return PairedDiff(s.mean, s.mean - half, s.mean + half, s.n)
