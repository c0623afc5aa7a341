"""Bootstrap intervals that resample prompts, not images.

The seeds of one prompt are not independent draws: a prompt the model cannot draw fails on every
seed. Treating its images as independent makes intervals too narrow by roughly the square root
of the design effect (1 + (m - 1) * rho for m seeds and intra-prompt correlation rho). So every
interval here is a cluster bootstrap: draw the prompts (clusters) with replacement, keep all of a
drawn prompt's observations, recompute the statistic.

A resample is a vector of multiplicities over clusters (multinomial, summing to the number of
clusters), so the mean of a resample is `sum(w * cluster_sums) / sum(w * cluster_counts)`:
thousands of resamples cost one matrix product. Two arms compared on the same prompts are
resampled with the *same* draw, which is what makes "new minus previous" a paired interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile interval; `clusters` is how many prompts carried it."""

    estimate: float
    low: float
    high: float
    n: int
    clusters: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": round(self.estimate, 6),
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "n": self.n,
            "clusters": self.clusters,
        }


def resample_weights(n_clusters: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, n_clusters) multiplicities of each cluster in each bootstrap draw."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=resamples)


def _clean(values: Sequence[float | None], clusters: Sequence[Hashable]) -> tuple[list, list]:
    if len(values) != len(clusters):
        raise ValueError(f"clusters: {len(clusters)} cluster keys for {len(values)} values")
    kept_values, kept_clusters = [], []
    for value, cluster in zip(values, clusters, strict=True):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        kept_values.append(float(value))
        kept_clusters.append(cluster)
    return kept_values, kept_clusters


def _cluster_sums(
    values: Sequence[float], clusters: Sequence[Hashable], keys: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray]:
    index = {key: i for i, key in enumerate(keys)}
    sums = np.zeros(len(keys))
    counts = np.zeros(len(keys))
    for value, cluster in zip(values, clusters, strict=True):
        if cluster in index:
            sums[index[cluster]] += value
            counts[index[cluster]] += 1
    return sums, counts


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)


def cluster_mean(
    values: Sequence[float | None],
    clusters: Sequence[Hashable],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval | None:
    """Mean of `values` with a bootstrap interval over `clusters`; None under two clusters.

    NaN and None values are dropped first. With one observation per cluster this is the ordinary
    (iid) percentile bootstrap.
    """
    kept, kept_clusters = _clean(values, clusters)
    keys = sorted(set(kept_clusters), key=repr)
    if len(keys) < 2:
        return None
    sums, counts = _cluster_sums(kept, kept_clusters, keys)
    weights = resample_weights(len(keys), resamples, seed)
    draws = (weights @ sums) / (weights @ counts)
    low, high = _percentiles(draws, confidence)
    return Interval(float(sums.sum() / counts.sum()), low, high, len(kept), len(keys))


def cluster_difference(
    a: Sequence[float | None],
    a_clusters: Sequence[Hashable],
    b: Sequence[float | None],
    b_clusters: Sequence[Hashable],
    *,
    relative: bool = False,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval | None:
    """mean(a) - mean(b) (or their ratio - 1 with `relative`) over the clusters both arms have.

    Both arms are resampled with the same draw of clusters, so a prompt that is hard for both
    moves both means together and cancels out of the difference. None under two shared clusters.
    """
    a_kept, a_keys = _clean(a, a_clusters)
    b_kept, b_keys = _clean(b, b_clusters)
    shared = sorted(set(a_keys) & set(b_keys), key=repr)
    if len(shared) < 2:
        return None
    a_sums, a_counts = _cluster_sums(a_kept, a_keys, shared)
    b_sums, b_counts = _cluster_sums(b_kept, b_keys, shared)
    weights = resample_weights(len(shared), resamples, seed)
    a_draws = (weights @ a_sums) / (weights @ a_counts)
    b_draws = (weights @ b_sums) / (weights @ b_counts)
    a_mean = a_sums.sum() / a_counts.sum()
    b_mean = b_sums.sum() / b_counts.sum()
    if relative:
        if b_mean == 0:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            draws = a_draws / np.abs(b_draws) - np.sign(b_draws)
        estimate = a_mean / abs(b_mean) - math.copysign(1.0, b_mean)
    else:
        draws = a_draws - b_draws
        estimate = a_mean - b_mean
    low, high = _percentiles(draws, confidence)
    n = int(a_counts.sum() + b_counts.sum())
    return Interval(float(estimate), low, high, n, len(shared))


def cluster_statistic(
    keys: Sequence[Hashable],
    statistic: Callable[[np.ndarray], float],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    n: int = 0,
) -> Interval | None:
    """Any statistic written as a function of cluster multiplicities (all ones = the data)."""
    if len(keys) < 2:
        return None
    weights = resample_weights(len(keys), resamples, seed)
    draws = np.array([statistic(w.astype(np.float64)) for w in weights])
    low, high = _percentiles(draws, confidence)
    return Interval(float(statistic(np.ones(len(keys)))), low, high, n, len(keys))
