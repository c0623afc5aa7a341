"""Bradley–Terry with ties and the cluster bootstrap against planted data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.engine.stats.bradley_terry import Vote, fit_davidson, fit_votes, win_rates
from training.engine.stats.cluster_bootstrap import (
    cluster_difference,
    cluster_mean,
    cluster_statistic,
)

PLANTED = {"base": -0.8, "previous": 0.0, "new": 0.9}


def _planted_votes(rng: np.random.Generator, nu: float, prompts: int, per_pair: int) -> list[Vote]:
    """Votes drawn from the Davidson model with PLANTED strengths, a few per prompt and pair."""
    votes = []
    arms = list(PLANTED)
    for prompt in range(prompts):
        for i, a in enumerate(arms):
            for b in arms[i + 1 :]:
                pa, pb = math.exp(PLANTED[a]), math.exp(PLANTED[b])
                tie = nu * math.sqrt(pa * pb)
                total = pa + pb + tie
                for _ in range(per_pair):
                    outcome = rng.choice(
                        ["left", "right", "tie"], p=[pa / total, pb / total, tie / total]
                    )
                    votes.append(Vote(f"p{prompt}", a, b, str(outcome)))
    return votes


def test_davidson_recovers_the_planted_ranking_and_tie_strength():
    rng = np.random.default_rng(1)
    votes = _planted_votes(rng, nu=0.6, prompts=60, per_pair=4)
    fit = fit_votes(votes, resamples=300)
    assert fit["ranking"] == ["new", "previous", "base"]
    centred = {arm: s - np.mean(list(PLANTED.values())) for arm, s in PLANTED.items()}
    for arm, truth in centred.items():
        low, high = fit["scores"][arm]["ci"]
        assert low < truth < high, (arm, truth, fit["scores"][arm])
    assert 0.35 < fit["tie_strength"] < 0.9
    assert fit["ties"] > 0 and fit["prompts"] == 60


def _hunter_mm(wins: np.ndarray, iterations: int = 5000) -> np.ndarray:
    """Hunter's (2004) MM iteration for plain Bradley-Terry, run to convergence."""
    totals = wins + wins.T
    p = np.ones(len(wins))
    for _ in range(iterations):
        p = wins.sum(1) / (totals / (p[:, None] + p[None, :])).sum(1)
        p /= p.sum()
    return np.log(p) - np.log(p).mean()


def test_without_ties_it_is_bradley_terry():
    from crowdkit.aggregation import BradleyTerry

    rng = np.random.default_rng(2)
    votes = _planted_votes(rng, nu=0.0, prompts=40, per_pair=3)
    arms = sorted(PLANTED)
    wins = np.zeros((3, 3))
    for v in votes:
        winner, loser = (v.left, v.right) if v.outcome == "left" else (v.right, v.left)
        wins[arms.index(winner), arms.index(loser)] += 1
    theta, nu = fit_davidson(wins, np.zeros((3, 3)), ridge=0.0)
    assert nu == 0.0
    np.testing.assert_allclose(theta, _hunter_mm(wins), atol=1e-4)
    # crowd-kit 1.4.2 runs the same MM update but stops after its second iteration (its
    # convergence check compares an array with itself), so only its ranking is comparable.
    frame = pd.DataFrame(
        [
            {
                "worker": "w",
                "left": v.left,
                "right": v.right,
                "label": v.left if v.outcome == "left" else v.right,
            }
            for v in votes
        ]
    )
    theirs = BradleyTerry(n_iter=100).fit(frame).scores_
    assert list(theirs.sort_values(ascending=False).index) == [arms[i] for i in np.argsort(-theta)]


def test_an_arm_that_never_loses_gets_a_finite_score():
    votes = [Vote(f"p{i}", "new", "old", "left") for i in range(10)]
    fit = fit_votes(votes, resamples=50)
    assert fit["ranking"] == ["new", "old"]
    assert all(math.isfinite(s["score"]) for s in fit["scores"].values())


def test_win_rates_count_ties_half_and_refuse_bad_votes():
    votes = [
        Vote("p1", "new", "old", "left"),
        Vote("p1", "old", "new", "tie"),
        Vote("p2", "old", "new", "left"),
        Vote("p2", "new", "old", "tie"),
    ]
    rates = win_rates(votes, "new")
    assert rates["old"]["win_rate"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert rates["old"]["ties"] == 2 and rates["old"]["prompts"] == 2
    with pytest.raises(ValueError, match="outcome"):
        Vote("p", "a", "b", "both")
    with pytest.raises(ValueError, match="itself"):
        Vote("p", "a", "a", "left")


def _clustered(
    rng: np.random.Generator, prompts: int, seeds: int, sd_prompt: float, sd_seed: float
):
    effect = rng.normal(0, sd_prompt, prompts)
    values = (effect[:, None] + rng.normal(0, sd_seed, (prompts, seeds))).ravel()
    clusters = np.repeat(np.arange(prompts), seeds)
    return values, clusters


def test_cluster_bootstrap_covers_correlated_seeds_where_the_iid_one_does_not():
    # Intra-prompt correlation 0.5, 8 seeds: the design effect is 4.5, an iid interval is
    # ~2.1x too narrow and covers the true mean (0) far less than 95 % of the time.
    rng = np.random.default_rng(3)
    prompts, seeds = 25, 8
    true_se = math.sqrt((1.0 + 1.0 / seeds) / prompts)
    covered = {"cluster": 0, "iid": 0}
    widths = {"cluster": [], "iid": []}
    trials = 120
    for trial in range(trials):
        values, clusters = _clustered(rng, prompts, seeds, 1.0, 1.0)
        for name, keys in (("cluster", clusters), ("iid", np.arange(len(values)))):
            interval = cluster_mean(list(values), list(keys), resamples=400, seed=trial)
            covered[name] += interval.low < 0 < interval.high
            widths[name].append(interval.high - interval.low)
    assert covered["cluster"] / trials > 0.87
    assert covered["iid"] / trials < 0.75
    assert np.mean(widths["cluster"]) / (2 * 1.96 * true_se) == pytest.approx(1.0, abs=0.15)
    assert np.mean(widths["cluster"]) / np.mean(widths["iid"]) > 1.7


def test_paired_difference_cancels_the_shared_prompt_effect():
    # Both arms share each prompt's difficulty (sd 1) and differ by a true 0.1: the paired
    # interval excludes zero while the prompt effect alone would swamp an unpaired one.
    rng = np.random.default_rng(4)
    prompts, seeds = 30, 4
    effect = np.repeat(rng.normal(0, 1.0, prompts), seeds)
    clusters = list(np.repeat(np.arange(prompts), seeds))
    new = effect + 0.1 + rng.normal(0, 0.05, len(effect))
    old = effect + rng.normal(0, 0.05, len(effect))
    paired = cluster_difference(list(new), clusters, list(old), clusters)
    assert paired.excludes_zero and paired.low < 0.1 < paired.high
    assert paired.estimate == pytest.approx(0.1, abs=0.03)
    unpaired_clusters = [f"new-{c}" for c in clusters]
    assert cluster_difference(list(new), unpaired_clusters, list(old), clusters) is None

    relative = cluster_difference(list(new + 5), clusters, list(old + 5), clusters, relative=True)
    assert relative.estimate == pytest.approx(0.1 / 5, abs=0.01) and relative.excludes_zero


def test_too_few_prompts_give_no_interval_and_bad_shapes_say_so():
    assert cluster_mean([0.1, 0.2, float("nan")], ["a", "a", "b"]) is None
    assert cluster_mean([None, 1.0], ["a", "b"]) is None
    with pytest.raises(ValueError, match="clusters"):
        cluster_mean([0.1, 0.2], ["a"])
    interval = cluster_statistic(
        ["a", "b", "c"], lambda w: float(w @ np.array([1.0, 2.0, 3.0]) / w.sum())
    )
    assert interval.estimate == pytest.approx(2.0) and interval.low <= 2.0 <= interval.high
