"""Pairwise votes between arms: Bradley–Terry with ties (Davidson 1970), win rates, intervals.

crowd-kit's `BradleyTerry` (Hunter's MM algorithm) needs every vote to name a winner, and "the
two look the same" is a real answer an annotator gives. Davidson's extension keeps Bradley–Terry's
strengths and adds one tie parameter nu:

    P(i beats j) = p_i / D,  P(tie) = nu * sqrt(p_i p_j) / D,  D = p_i + p_j + nu * sqrt(p_i p_j)

With no ties nu is 0 and this is Bradley–Terry exactly (the tests check it against crowd-kit).
Scores are log-strengths centred on their mean; a weak ridge keeps them finite when one arm
never loses. Every interval is a cluster bootstrap over prompts: votes on the same prompt share
its difficulty, so they are resampled together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.engine.stats.cluster_bootstrap import (
    DEFAULT_CONFIDENCE,
    Interval,
    _percentiles,
    cluster_mean,
    resample_weights,
)

OUTCOMES = ("left", "right", "tie")
# Per unit of log-strength squared: negligible against a few dozen votes, but an arm that wins
# every vote gets a large finite score instead of an optimiser running off to infinity.
RIDGE = 0.01
BT_RESAMPLES = 1000


@dataclass(frozen=True)
class Vote:
    cluster: Hashable  # the prompt the two images were generated for
    left: str
    right: str
    outcome: str  # "left", "right" or "tie"

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome: {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        if self.left == self.right:
            raise ValueError(f"vote compares {self.left!r} with itself")


def count_tables(
    votes: Sequence[Vote], arms: Sequence[str], clusters: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray]:
    """wins[c, i, j]: times arm i beat arm j on cluster c; ties[c, i, j] (i < j) ties."""
    arm_index = {arm: i for i, arm in enumerate(arms)}
    cluster_index = {key: i for i, key in enumerate(clusters)}
    shape = (len(clusters), len(arms), len(arms))
    wins, ties = np.zeros(shape), np.zeros(shape)
    for vote in votes:
        c, i, j = cluster_index[vote.cluster], arm_index[vote.left], arm_index[vote.right]
        if vote.outcome == "left":
            wins[c, i, j] += 1
        elif vote.outcome == "right":
            wins[c, j, i] += 1
        else:
            ties[c, min(i, j), max(i, j)] += 1
    return wins, ties


def fit_davidson(
    wins: np.ndarray, ties: np.ndarray, *, ridge: float = RIDGE, allow_ties: bool | None = None
) -> tuple[np.ndarray, float]:
    """Maximum (penalised) likelihood log-strengths (centred) and tie parameter nu.

    `wins` is (K, K) with wins[i, j] = i beat j; `ties` (K, K) holds ties of i < j in its upper
    triangle. Without any tie nu is fixed at 0 (its likelihood peaks at the boundary).

    In x = (log-strengths, log nu) each pair's outcome logits are affine, z = A x with
    z = (theta_i, theta_j, log nu + (theta_i + theta_j) / 2), and the negative log-likelihood is
    sum n * logsumexp(z) - counts . z: convex, so Newton's method with backtracking converges
    from zero in a handful of steps (the bootstrap refits it a thousand times).
    """
    k = wins.shape[0]
    pairs = list(itertools.combinations(range(k), 2))
    with_ties = bool(ties.sum() > 0) if allow_ties is None else allow_ties
    outcomes = 3 if with_ties else 2
    dim = k + (1 if with_ties else 0)
    design = np.zeros((len(pairs), outcomes, dim))
    counts = np.zeros((len(pairs), outcomes))
    for row, (i, j) in enumerate(pairs):
        design[row, 0, i] = design[row, 1, j] = 1.0
        counts[row, 0], counts[row, 1] = wins[i, j], wins[j, i]
        if with_ties:
            design[row, 2, [i, j, k]] = (0.5, 0.5, 1.0)
            counts[row, 2] = ties[i, j]
    totals = counts.sum(1)
    penalty = np.zeros(dim)
    penalty[:k] = ridge

    def value(x: np.ndarray) -> float:
        z = design @ x
        top = z.max(1)
        lse = top + np.log(np.exp(z - top[:, None]).sum(1))
        return float((totals * lse).sum() - (counts * z).sum() + (penalty * x * x).sum())

    x = np.zeros(dim)
    current = value(x)
    for _ in range(100):
        z = design @ x
        probs = np.exp(z - z.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        residual = totals[:, None] * probs - counts
        grad = np.einsum("po,pod->d", residual, design) + 2 * penalty * x
        covariance = totals[:, None, None] * (
            np.einsum("po,oq->poq", probs, np.eye(outcomes)) - np.einsum("po,pq->poq", probs, probs)
        )
        hessian = np.einsum("pod,poq,pqe->de", design, covariance, design)
        hessian += np.diag(2 * penalty) + 1e-9 * np.eye(dim)
        step = np.linalg.lstsq(hessian, grad, rcond=None)[0]
        scale = 1.0
        while scale > 1e-8:
            candidate = x - scale * step
            trial = value(candidate)
            if trial <= current:
                break
            scale /= 2
        x, previous = candidate, current
        current = trial
        if previous - current < 1e-12 and np.abs(grad).max() < 1e-7:
            break
    theta = x[:k] - x[:k].mean()
    nu = float(math.exp(x[k])) if with_ties else 0.0
    return theta, nu


def win_probability(theta_i: float, theta_j: float, nu: float) -> dict[str, float]:
    """P(i wins), P(j wins), P(tie) under the fitted model."""
    p_i, p_j = math.exp(theta_i), math.exp(theta_j)
    tie = nu * math.sqrt(p_i * p_j)
    total = p_i + p_j + tie
    return {"win": p_i / total, "loss": p_j / total, "tie": tie / total}


def fit_votes(
    votes: Sequence[Vote],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = BT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores with cluster-bootstrap intervals, the tie parameter and the ranking of all arms."""
    arms = sorted({v.left for v in votes} | {v.right for v in votes})
    clusters = sorted({v.cluster for v in votes}, key=repr)
    result: dict[str, Any] = {
        "model": "Davidson (Bradley-Terry with ties)",
        "votes": len(votes),
        "ties": sum(v.outcome == "tie" for v in votes),
        "prompts": len(clusters),
        "scores": {},
        "ranking": [],
        "tie_strength": None,
    }
    if len(arms) < 2:
        return result
    wins, ties = count_tables(votes, arms, clusters)
    with_ties = bool(ties.sum() > 0)
    theta, nu = fit_davidson(wins.sum(0), ties.sum(0), allow_ties=with_ties)
    draws = np.full((resamples, len(arms)), np.nan)
    if len(clusters) >= 2:
        weights = resample_weights(len(clusters), resamples, seed).astype(np.float64)
        w_tables = np.tensordot(weights, wins, axes=1)
        t_tables = np.tensordot(weights, ties, axes=1)
        for b in range(resamples):
            draws[b], _ = fit_davidson(w_tables[b], t_tables[b], allow_ties=with_ties)
    for index, arm in enumerate(arms):
        if len(clusters) >= 2:
            low, high = _percentiles(draws[:, index], confidence)
            interval: Interval | None = Interval(
                float(theta[index]), low, high, len(votes), len(clusters)
            )
        else:
            interval = None
        result["scores"][arm] = {
            "score": round(float(theta[index]), 6),
            "ci": [round(interval.low, 6), round(interval.high, 6)] if interval else None,
        }
    result["ranking"] = [arms[i] for i in np.argsort(-theta, kind="stable")]
    result["tie_strength"] = round(nu, 6)
    return result


def vote_value(vote: Vote, arm: str) -> float:
    """1 if `arm` won the vote, 0.5 for a tie, 0 if it lost."""
    if vote.outcome == "tie":
        return 0.5
    winner = vote.left if vote.outcome == "left" else vote.right
    return 1.0 if winner == arm else 0.0


def win_rates(
    votes: Sequence[Vote], arm: str, *, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """`arm`'s win rate against each other arm (ties count half), intervals by prompt."""
    others = sorted({v.left for v in votes} | {v.right for v in votes} - {arm})
    rates: dict[str, dict[str, Any]] = {}
    for other in others:
        relevant = [v for v in votes if {v.left, v.right} == {arm, other}]
        values = [vote_value(v, arm) for v in relevant]
        interval = cluster_mean(
            values, [v.cluster for v in relevant], confidence=confidence, seed=seed
        )
        rates[other] = {
            "win_rate": round(sum(values) / len(values), 6) if values else None,
            "ci": [round(interval.low, 6), round(interval.high, 6)] if interval else None,
            "votes": len(values),
            "ties": sum(v.outcome == "tie" for v in relevant),
            "prompts": len({v.cluster for v in relevant}),
        }
    return rates
