"""Label models on planted votes with known LF accuracies, and the LF summary statistics."""

from __future__ import annotations

import numpy as np
import pytest

from curation.weak.label_model import accuracy, fit_label_model, lf_summary, majority_vote


def planted(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided LFs of accuracy 0.85/0.7/0.6/0.55 and one-sided 'sticker' LFs."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.3).astype(int)

    def two_sided(coverage: float, acc: float) -> np.ndarray:
        vote = np.where(rng.random(n) < acc, truth, 1 - truth)
        return np.where(rng.random(n) < coverage, vote, -1)

    def one_sided(fires_on_sticker: float, fires_on_other: float) -> np.ndarray:
        rate = np.where(truth == 1, fires_on_sticker, fires_on_other)
        return np.where(rng.random(n) < rate, 1, -1)

    votes = np.stack(
        [
            two_sided(0.8, 0.85),
            two_sided(0.6, 0.7),
            two_sided(0.5, 0.6),
            two_sided(0.9, 0.55),
            one_sided(0.6, 0.05),
            one_sided(0.4, 0.02),
        ],
        axis=1,
    )
    return votes, truth


def lf_accuracies(votes: np.ndarray, truth: np.ndarray) -> list[float]:
    """Each LF's accuracy counting abstentions as wrong, i.e. as a labeller of every image."""
    return [float((votes[:, j] == truth).mean()) for j in range(votes.shape[1])]


def test_dawid_skene_beats_every_lf_and_majority_vote() -> None:
    votes, truth = planted()
    fitted = fit_label_model(votes)
    ds, mv = accuracy(fitted.probabilities, truth), accuracy(majority_vote(votes), truth)
    assert ds >= 0.85 and ds >= mv + 0.1
    assert ds > max(lf_accuracies(votes, truth))
    assert abs(fitted.prior - 0.3) < 0.05
    # It learned which LF to trust: the 0.85 LF's true-negative rate tops the 0.55 one's.
    assert fitted.lf_true_negative_rate[0] > fitted.lf_true_negative_rate[3]
    assert ((fitted.probabilities >= 0) & (fitted.probabilities <= 1)).all()


def test_crowdkit_dawid_skene_matches_majority_or_better_on_two_sided_votes() -> None:
    votes, truth = planted(600, seed=1)
    two_sided = votes[:, :4]
    crowd = accuracy(fit_label_model(two_sided, "crowdkit_dawid_skene").probabilities, truth)
    assert crowd >= accuracy(majority_vote(two_sided), truth) - 0.01
    assert crowd > min(lf_accuracies(two_sided, truth))


def test_lf_summary_counts_coverage_overlap_conflict_and_accuracy() -> None:
    votes = np.array([[1, 1, -1], [1, 0, -1], [-1, 0, 0], [0, -1, -1]])
    gold = np.array([1, 1, 0, -1])
    a, b, c = lf_summary(votes, ["a", "b", "c"], gold)
    assert (a.coverage, a.overlap, a.conflict) == (0.75, 0.5, 0.25)
    assert (b.coverage, b.overlap, b.conflict) == (0.75, 0.75, 0.25)
    assert (c.coverage, c.overlap, c.conflict) == (0.25, 0.25, 0.0)
    assert (a.accuracy, a.gold_votes) == (1.0, 2) and b.accuracy == pytest.approx(2 / 3)
    assert (a.positive_votes, a.negative_votes) == (2, 1)


def test_no_votes_and_bad_matrices() -> None:
    empty = fit_label_model(np.full((4, 3), -1))
    np.testing.assert_allclose(empty.probabilities, empty.prior)
    with pytest.raises(ValueError, match="other than"):
        fit_label_model(np.array([[2, 0]]))
    with pytest.raises(ValueError, match="'snorkel'"):
        fit_label_model(np.zeros((2, 2), int), "snorkel")
