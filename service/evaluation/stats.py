"""Bootstrap statistics for evaluation tables (pure numpy, deterministic: fixed seeds).

    mean_interval(values)            -> Interval: mean and 95 % percentile-bootstrap interval
    paired_comparison(a, b)          -> PairedComparison: mean difference a - b with its
                                        interval, and the win rate of a with its interval

Percentile bootstrap: resample the videos with replacement ``resamples`` times, take the
statistic of each resample, and report the 2.5 % and 97.5 % quantiles. Paired comparisons
resample *pairs* (the same video names in both folders), so the between-video spread, which
both models share, cancels out. With fewer than 2 values there is no interval (NaN bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95
_CHUNK = 1000  # resamples drawn at a time (bounds memory for long folders)


@dataclass(frozen=True)
class Interval:
    estimate: float  # the statistic on the data itself
    low: float  # bootstrap quantiles; NaN when n < 2
    high: float
    n: int

    def excludes(self, value: float = 0.0) -> bool:
        """True when the whole interval lies strictly on one side of ``value``."""
        return bool(self.low > value or self.high < value)

    def format(self, digits: int = 3) -> str:
        if math.isnan(self.estimate):
            return "-"
        if math.isnan(self.low):
            return f"{self.estimate:.{digits}f}"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class PairedComparison:
    difference: Interval  # mean of (a - b) over the pairs
    win_rate: Interval  # fraction of pairs where a is better (ties count one half)
    mean_a: float
    mean_b: float
    higher_is_better: bool


def _bootstrap(statistic_rows, values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``statistic_rows(samples [R,n]) -> [R]`` evaluated on ``resamples`` resamples."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    out = []
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        index = rng.integers(0, n, size=(count, n))
        out.append(statistic_rows(values[index]))
    return np.concatenate(out)


def _interval(estimate: float, values: np.ndarray, statistic_rows, *, resamples: int, seed: int,
              confidence: float) -> Interval:  # fmt: skip
    n = values.shape[0]
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n)
    stats = _bootstrap(statistic_rows, values, resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), n)


def clean(values) -> np.ndarray:  # -> [n] float64 without None/NaN
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def mean_interval(
    values,  # [n] numbers; None/NaN are dropped
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval:
    """Mean with its percentile-bootstrap interval."""
    data = clean(values)
    if data.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    return _interval(float(data.mean()), data, lambda rows: rows.mean(axis=1),
                     resamples=resamples, seed=seed, confidence=confidence)  # fmt: skip


def paired_comparison(
    a,  # [n] metric of model A per video
    b,  # [n] metric of model B on the same videos, same order
    *,
    higher_is_better: bool = True,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> PairedComparison:
    """Paired difference a - b and A's win rate, over pairs where both values are finite."""
    a = np.array([np.nan if v is None else v for v in a], dtype=np.float64)
    b = np.array([np.nan if v is None else v for v in b], dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    if a.size == 0:
        empty = Interval(math.nan, math.nan, math.nan, 0)
        return PairedComparison(empty, empty, math.nan, math.nan, higher_is_better)
    difference = a - b
    sign = 1.0 if higher_is_better else -1.0
    wins = np.where(sign * difference > 0, 1.0, np.where(difference == 0, 0.5, 0.0))
    options = dict(resamples=resamples, seed=seed, confidence=confidence)
    mean_rows = lambda rows: rows.mean(axis=1)  # noqa: E731
    return PairedComparison(
        difference=_interval(float(difference.mean()), difference, mean_rows, **options),
        win_rate=_interval(float(wins.mean()), wins, mean_rows, **options),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        higher_is_better=higher_is_better,
    )
