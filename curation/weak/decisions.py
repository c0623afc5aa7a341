"""What a data lead's accept/reject decisions teach a recipe run, beyond the label model's gold.

A small scikit-learn classifier (standardised logistic regression, class-balanced) is fitted on
the decided images: its inputs are the LF votes (one-hot), the image measurements the LFs vote
on (with a missing-value indicator each), and the CLIP vector where the run has one. Its P(sticker)
is mixed with the label model's: p = (1 − w)·p_label + w·p_classifier, with w = n / (n + 20)
growing with the number of decisions n, so a handful of clicks nudges and hundreds steer.

How much the decisions moved the ranking is measured, not assumed: k-fold cross-validation over
the decisions refits both the gold-aware label model and the classifier on the training folds and
scores the held-out decisions, next to the label model's accuracy on the same decisions without
any gold. Both numbers go into the run's stats and onto the run page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_PER_CLASS = 2  # below this a class cannot be split into training and held-out folds
MAX_FOLDS = 5
HALF_WEIGHT_AT = 20  # decisions at which the classifier's share of the mix reaches one half
CV_UNLABELLED_SAMPLE = 50_000  # unlabelled rows each CV refit of the label model sees
PREDICT_CHUNK = 50_000


@dataclass
class DecisionReport:
    """What the run page shows about decisions; `reason` says why nothing was learned."""

    decisions: int = 0
    positives: int = 0
    negatives: int = 0
    used: bool = False
    reason: str = ""
    classifier: str = "logistic_regression"
    classifier_weight: float = 0.0
    folds: int = 0
    cv_accuracy: float | None = None  # held-out decisions, label model + classifier with gold
    cv_accuracy_classifier: float | None = None  # the classifier alone, same folds
    accuracy_without_decisions: float | None = None  # the label model with no gold at all
    n_features: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def classifier_weight(n_decisions: int) -> float:
    return n_decisions / (n_decisions + HALF_WEIGHT_AT) if n_decisions else 0.0


def _design(
    votes: np.ndarray,
    table: Mapping[str, np.ndarray],
    vectors: np.ndarray | None,
    rows: np.ndarray | slice,
) -> np.ndarray:
    """Classifier inputs of `rows`: one-hot votes, features + missing flags, CLIP vector."""
    picked = votes[rows]
    parts = [(picked == 1).astype(np.float32), (picked == 0).astype(np.float32)]
    for name in sorted(table):
        column = np.asarray(table[name], np.float64)[rows]
        missing = np.isnan(column)
        if name in ("width", "height", "colours_90"):
            column = np.log1p(np.where(missing, 0.0, column))
        parts.append(np.where(missing, 0.0, column).astype(np.float32)[:, None])
        parts.append(missing.astype(np.float32)[:, None])
    if vectors is not None:
        parts.append(np.asarray(vectors[rows], np.float32))
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(picked), 0), np.float32)


def _classifier(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000, random_state=seed),
    )


def _cv_subsample(n: int, known: np.ndarray, seed: int) -> np.ndarray:
    """Rows a CV refit of the label model sees: every decision and a sample of the rest."""
    others = np.flatnonzero(~known)
    if len(others) > CV_UNLABELLED_SAMPLE:
        others = np.random.default_rng(seed).choice(others, CV_UNLABELLED_SAMPLE, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(known), others]))


def learn_from_decisions(
    gold: np.ndarray,
    votes: np.ndarray,
    table: Mapping[str, np.ndarray],
    label_model: Callable[[np.ndarray | slice, np.ndarray], np.ndarray],
    with_gold: np.ndarray,
    *,
    vectors: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, DecisionReport]:
    """P(sticker) per row mixing the gold-aware label model with a classifier, and a report.

    `gold` is 0/1 per row where decided and −1 elsewhere; `label_model(rows, gold_of_rows)`
    fits the label model on those rows of `votes` and returns their P(sticker) (refitted on
    subsets during cross-validation, and once with no gold for the comparison); `with_gold` is
    its output on all rows with all of `gold`.
    `vectors` are the rows' CLIP vectors, aligned with `votes`, or None.
    """
    gold = np.asarray(gold, np.int64)
    known = gold >= 0
    report = DecisionReport(
        decisions=int(known.sum()),
        positives=int((gold == 1).sum()),
        negatives=int((gold == 0).sum()),
    )
    if not report.decisions:
        report.reason = "no decisions recorded for these images yet"
        return with_gold, report
    without = label_model(slice(None), np.full(len(gold), -1))
    report.accuracy_without_decisions = float(((without[known] >= 0.5) == gold[known]).mean())
    smaller = min(report.positives, report.negatives)
    if smaller < MIN_PER_CLASS:
        report.reason = (
            f"the label model uses the decisions as gold; the classifier needs at least "
            f"{MIN_PER_CLASS} accepted and {MIN_PER_CLASS} rejected images "
            f"(have {report.positives} and {report.negatives})"
        )
        return with_gold, report

    from sklearn.model_selection import StratifiedKFold

    decided = np.flatnonzero(known)
    x_decided = _design(votes, table, vectors, decided)
    y_decided = gold[decided]
    report.n_features = int(x_decided.shape[1])
    report.folds = min(MAX_FOLDS, smaller)
    weight = classifier_weight(report.decisions)
    report.classifier_weight = round(weight, 4)

    # Cross-validation: every held-out decision is scored by models that never saw it.
    rows = _cv_subsample(len(gold), known, seed)
    position = {int(r): i for i, r in enumerate(rows)}
    mixed_hits = classifier_hits = 0
    folds = StratifiedKFold(report.folds, shuffle=True, random_state=seed)
    for train, test in folds.split(x_decided, y_decided):
        fold_gold = np.full(len(rows), -1)
        fold_gold[[position[int(r)] for r in decided[train]]] = y_decided[train]
        held_label = label_model(rows, fold_gold)[[position[int(r)] for r in decided[test]]]
        model = _classifier(seed).fit(x_decided[train], y_decided[train])
        held_classifier = model.predict_proba(x_decided[test])[:, 1]
        held_mixed = (1 - weight) * held_label + weight * held_classifier
        mixed_hits += int(((held_mixed >= 0.5) == y_decided[test]).sum())
        classifier_hits += int(((held_classifier >= 0.5) == y_decided[test]).sum())
    report.cv_accuracy = mixed_hits / len(decided)
    report.cv_accuracy_classifier = classifier_hits / len(decided)

    model = _classifier(seed).fit(x_decided, y_decided)
    learned = np.empty(len(gold))
    for start in range(0, len(gold), PREDICT_CHUNK):
        chunk = slice(start, min(start + PREDICT_CHUNK, len(gold)))
        learned[chunk] = model.predict_proba(_design(votes, table, vectors, chunk))[:, 1]
    report.used = True
    return (1 - weight) * with_gold + weight * learned, report
