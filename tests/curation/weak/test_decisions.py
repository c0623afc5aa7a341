"""Decisions as gold: planted votes where the label model alone is fooled, and the classifier."""

from __future__ import annotations

import numpy as np
import pytest

from curation.weak.decisions import classifier_weight, learn_from_decisions
from curation.weak.features import extract_features
from curation.weak.label_model import accuracy, fit_label_model
from curation.weak.recipe import heuristics_recipe, run_recipe
from tests.curation.weak.synthetic import labelled_pool


def correlated_block(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four LFs keyed on one nuisance (right 60 % of the time) out-vote two good LFs."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.3).astype(int)
    nuisance = np.where(rng.random(n) < 0.6, truth, 1 - truth)
    columns = []
    for _ in range(4):
        vote = np.where(rng.random(n) < 0.95, nuisance, 1 - nuisance)
        columns.append(np.where(rng.random(n) < 0.9, vote, -1))
    for acc, coverage in ((0.9, 0.7), (0.85, 0.6)):
        vote = np.where(rng.random(n) < acc, truth, 1 - truth)
        columns.append(np.where(rng.random(n) < coverage, vote, -1))
    return np.stack(columns, axis=1), truth


def decide(truth: np.ndarray, count: int, seed: int) -> np.ndarray:
    gold = np.full(len(truth), -1)
    picked = np.random.default_rng(seed).choice(len(truth), count, replace=False)
    gold[picked] = truth[picked]
    return gold


@pytest.mark.parametrize("seed", [0, 2])
def test_forty_decisions_raise_label_model_accuracy_on_the_undecided(seed: int) -> None:
    votes, truth = correlated_block(seed=seed)
    gold = decide(truth, 40, seed=100 + seed)
    rest = gold < 0
    alone = accuracy(fit_label_model(votes).probabilities[rest], truth[rest])
    taught = fit_label_model(votes, gold=gold)
    with_gold = accuracy(taught.probabilities[rest], truth[rest])
    assert alone < 0.65 and with_gold >= alone + 0.15, (alone, with_gold)
    np.testing.assert_array_equal(taught.probabilities[~rest], gold[~rest])  # clamped


def test_bad_gold_is_refused() -> None:
    votes, truth = correlated_block(50)
    with pytest.raises(ValueError, match="one entry per image"):
        fit_label_model(votes, gold=truth[:10])
    with pytest.raises(ValueError, match="other than"):
        fit_label_model(votes, gold=np.full(50, 2))


def test_classifier_learns_what_no_lf_says_and_reports_cross_validated_accuracy() -> None:
    # The truth lives in a measurement no LF votes on; only the decisions can reveal it.
    votes, truth = correlated_block(2000, seed=1)
    votes = votes[:, :4]  # only the misleading block
    rng = np.random.default_rng(5)
    table = {"flat_fraction": np.where(truth == 1, 0.8, 0.3) + rng.normal(0, 0.1, len(truth))}
    gold = decide(truth, 60, seed=9)

    def label_model(rows: np.ndarray | slice, g: np.ndarray) -> np.ndarray:
        return fit_label_model(votes[rows], gold=g).probabilities

    p, report = learn_from_decisions(
        gold, votes, table, label_model, label_model(slice(None), gold)
    )
    rest = gold < 0
    assert report.used and report.decisions == 60 and report.folds == 5
    assert report.positives + report.negatives == 60
    assert report.cv_accuracy is not None and report.cv_accuracy >= 0.9
    assert report.accuracy_without_decisions is not None
    assert report.cv_accuracy >= report.accuracy_without_decisions + 0.2
    assert accuracy(p[rest], truth[rest]) >= 0.9
    assert (
        report.classifier_weight == pytest.approx(classifier_weight(60))
        and 0.7 < report.classifier_weight < 0.8
    )


def test_one_sided_decisions_teach_the_label_model_only() -> None:
    votes, truth = correlated_block(300)
    gold = np.full(300, -1)
    gold[np.flatnonzero(truth == 1)[:5]] = 1
    with_gold = fit_label_model(votes, gold=gold).probabilities
    p, report = learn_from_decisions(gold, votes, {}, lambda v, g: with_gold, with_gold)
    assert not report.used and "at least 2 accepted and 2 rejected" in report.reason
    np.testing.assert_array_equal(p, with_gold)


def test_run_recipe_uses_decisions_and_reports_per_lf_accuracy() -> None:
    images, labels = labelled_pool(16, 16, seed=4)
    features = {i: extract_features(im) for i, im in enumerate(images)}
    gold = {i: int(labels[i]) for i in range(0, 32, 4)}
    gold[999] = 1  # decided once, no longer in the pool
    result = run_recipe(heuristics_recipe(), features, gold=gold)
    report = result.decisions
    assert report.decisions == 8 and report.used and report.cv_accuracy is not None
    assert "1 decided image(s) are not among this run's candidates" in report.reason
    stats = {s.name: s for s in result.lf_stats}
    assert stats["flat_regions"].gold_votes == 8 and stats["flat_regions"].accuracy == 1.0
    assert stats["flat_regions"].learned_true_positive_rate is not None
    ranked = [int(labels[int(i)]) for i in result.image_ids]
    assert sum(ranked[:16]) == 16
    certainty = result.certainty
    assert ((certainty >= 0) & (certainty <= 1)).all()
