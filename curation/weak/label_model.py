"""From labelling-function votes to one probability of "sticker" per image.

Two Dawid–Skene label models, each LF treated as an annotator with its own error rates:
- `dawid_skene` (default): DS with abstention as an observed outcome, i.e. per LF
  P(vote ∈ {abstain, 0, 1} | true class), fitted by EM in a few vectorised numpy lines. Most
  heuristic LFs are one-sided (they only ever say "sticker" or abstain); for them the evidence
  is *when* they fire, which only a model of abstention can use.
- `crowdkit_dawid_skene`: crowd-kit's maintained DawidSkene on the non-abstain votes. It is the
  textbook model but ignores abstentions, so a one-sided LF carries no information there; kept
  as a cross-check and for LF sets that vote both ways.
- `majority`: share of sticker votes among non-abstaining LFs, the baseline.
Plus Snorkel's LF summary: coverage, overlap, conflict and, given gold labels, accuracy.

Gold (a data lead's accept/reject decisions) enters `dawid_skene` in two ways: gold rows are
clamped to their label in every E-step, and in the M-step they are up-weighted so that together
they carry three times the mass of all unlabelled rows (`GOLD_SHARE`). A few dozen decisions then set each LF's error
rates, which is what breaks the independence assumption's worst failure: a block of correlated
LFs that agree with each other (and so out-vote everything) without agreeing with the truth.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

METHODS = ("dawid_skene", "crowdkit_dawid_skene", "majority")
_SMOOTHING = 1.0
# Gold rows together weigh this many times all unlabelled rows in the M-step: decisions are few
# but true, and the unlabelled mass is where a correlated block of LFs out-votes the rest.
GOLD_SHARE = 3.0


@dataclass
class LabelModelResult:
    probabilities: np.ndarray  # P(sticker) per image; `prior` where no LF voted
    method: str
    prior: float
    # Per LF: estimated P(vote=1 | sticker), P(vote=0 | not sticker) (DS models only).
    lf_true_positive_rate: list[float] = field(default_factory=list)
    lf_true_negative_rate: list[float] = field(default_factory=list)
    iterations: int = 0


@dataclass
class LFStats:
    name: str
    coverage: float
    overlap: float
    conflict: float
    positive_votes: int
    negative_votes: int
    accuracy: float | None = None  # on the gold subset, where the LF voted
    gold_votes: int = 0
    # What the label model learned (with gold, where given): P(vote=1 | sticker), P(vote=0 | not).
    learned_true_positive_rate: float | None = None
    learned_true_negative_rate: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check(votes: np.ndarray) -> np.ndarray:
    votes = np.asarray(votes)
    if votes.ndim != 2:
        raise ValueError(f"vote matrix must be 2-D (images × LFs), got shape {votes.shape}")
    bad = ~np.isin(votes, (-1, 0, 1))
    if bad.any():
        raise ValueError(f"vote matrix holds values other than −1/0/1: {np.unique(votes[bad])[:5]}")
    return votes.astype(np.int8, copy=False)


def majority_vote(votes: np.ndarray, prior: float = 0.5) -> np.ndarray:
    votes = _check(votes)
    positive = (votes == 1).sum(axis=1)
    voted = (votes >= 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = positive / voted
    return np.where(voted > 0, share, prior).astype(np.float64)


def _gold_rows(gold: np.ndarray | None, n: int) -> np.ndarray:
    """Boolean mask of rows with a 0/1 gold label; raises on a wrong length or value."""
    if gold is None:
        return np.zeros(n, bool)
    gold = np.asarray(gold)
    if gold.shape != (n,):
        raise ValueError(f"gold must have one entry per image ({n}), got shape {gold.shape}")
    if not np.isin(gold, (-1, 0, 1)).all():
        raise ValueError("gold holds values other than −1 (unknown), 0 and 1")
    return gold >= 0


def _dawid_skene_abstain(
    votes: np.ndarray, n_iter: int, tol: float, gold: np.ndarray | None = None
) -> tuple[np.ndarray, float, np.ndarray, int]:
    n, m = votes.shape
    known_rows = _gold_rows(gold, n)
    n_gold = int(known_rows.sum())
    # EM runs on distinct (votes, gold) rows weighted by how often each occurs: a million images
    # cast a few hundred distinct vote patterns, so an iteration costs patterns, not images.
    labels = np.asarray(gold, np.int8) if gold is not None else np.full(n, -1, np.int8)
    keyed = np.concatenate([votes.astype(np.int8), labels[:, None]], axis=1)
    if n:
        rows, inverse, counts = np.unique(keyed, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
    else:
        rows, inverse, counts = keyed, np.zeros(0, np.int64), np.zeros(0, np.int64)
    outcome = rows[:, :m].astype(np.int64) + 1  # 0 abstain, 1 not sticker, 2 sticker
    known = rows[:, m] >= 0
    clamp = np.zeros((int(known.sum()), 2))
    clamp[np.arange(len(clamp)), rows[known, m].astype(int)] = 1.0
    # Gold rows weigh GOLD_SHARE times every unlabelled row, together (never less than one each).
    weight = counts.astype(np.float64)
    if n_gold:
        weight[known] *= max(1.0, GOLD_SHARE * (n - n_gold) / n_gold)
    mv = majority_vote(rows[:, :m], prior=0.5)
    posterior = np.stack([1 - mv, mv], axis=1)
    posterior[known] = clamp
    confusion = np.zeros((m, 2, 3))
    iterations = 0
    for step in range(1, n_iter + 1):
        iterations = step
        # M-step: class prior and each LF's outcome distribution per true class. The prior is
        # taken unweighted: decisions are made on top-ranked images, a biased sample of classes.
        prior = ((posterior * counts[:, None]).sum(axis=0) / max(n, 1)).clip(1e-6, 1 - 1e-6)
        weighted = posterior * weight[:, None]
        for j in range(m):
            for o in range(3):
                mask = outcome[:, j] == o
                confusion[j, :, o] = weighted[mask].sum(axis=0)
        confusion = (confusion + _SMOOTHING) / (confusion + _SMOOTHING).sum(axis=2, keepdims=True)
        # E-step: posterior over the true class given every LF's outcome.
        log_confusion = np.log(confusion)
        log_post = np.tile(np.log(prior), (len(rows), 1))
        for j in range(m):
            log_post += log_confusion[j][:, outcome[:, j]].T
        log_post -= log_post.max(axis=1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(axis=1, keepdims=True)
        new[known] = clamp
        change = float(np.abs(new - posterior).max()) if len(rows) else 0.0
        posterior = new
        if change < tol:
            break
    probabilities = posterior[inverse, 1] if n else np.zeros(0)
    return probabilities, float(probabilities.mean()) if n else 0.5, confusion, iterations


def _crowdkit_dawid_skene(votes: np.ndarray, n_iter: int, tol: float) -> np.ndarray:
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    rows, cols = np.nonzero(votes >= 0)
    probabilities = np.full(len(votes), np.nan)
    if not len(rows):
        return probabilities
    frame = pd.DataFrame({"task": rows, "worker": cols, "label": votes[rows, cols].astype(int)})
    with warnings.catch_warnings():
        # crowd-kit 1.4.2 still uses pandas' inplace/copy keywords, which pandas 3 deprecates.
        warnings.filterwarnings("ignore", module=r"crowdkit\.")
        probas = DawidSkene(n_iter=n_iter, tol=tol).fit_predict_proba(frame)
    positive = probas[1] if 1 in probas.columns else pd.Series(0.0, index=probas.index)
    probabilities[positive.index.to_numpy()] = positive.to_numpy()
    return probabilities


def fit_label_model(
    votes: np.ndarray,
    method: str = "dawid_skene",
    n_iter: int = 100,
    tol: float = 1e-6,
    gold: np.ndarray | None = None,
) -> LabelModelResult:
    """P(sticker) per row of an (images × LFs) vote matrix in {−1, 0, 1}.

    `gold` (0/1 where a decision exists, −1 elsewhere) is used by `dawid_skene` only: gold
    rows are clamped and set the LFs' error rates (see the module docstring). The other models
    ignore it; their probabilities of gold rows are still their own estimate.
    """
    votes = _check(votes)
    _gold_rows(gold, len(votes))
    if method not in METHODS:
        raise ValueError(f"label model {method!r}: unknown (known: {', '.join(METHODS)})")
    if method == "majority" or votes.shape[1] == 0:
        probabilities = majority_vote(votes)
        return LabelModelResult(probabilities, "majority", 0.5)
    if method == "crowdkit_dawid_skene":
        probabilities = _crowdkit_dawid_skene(votes, n_iter, tol)
        covered = ~np.isnan(probabilities)
        prior = float(probabilities[covered].mean()) if covered.any() else 0.5
        return LabelModelResult(np.where(covered, probabilities, prior), method, prior)
    probabilities, prior, confusion, iterations = _dawid_skene_abstain(votes, n_iter, tol, gold)
    # Rate of voting each class given the true class, among that class's images.
    return LabelModelResult(
        probabilities=probabilities,
        method=method,
        prior=prior,
        lf_true_positive_rate=confusion[:, 1, 2].round(4).tolist(),
        lf_true_negative_rate=confusion[:, 0, 1].round(4).tolist(),
        iterations=iterations,
    )


def lf_summary(
    votes: np.ndarray, names: Sequence[str], gold: np.ndarray | None = None
) -> list[LFStats]:
    """Snorkel's LF analysis; `gold` holds 0/1 where known and −1 elsewhere."""
    votes = _check(votes)
    if len(names) != votes.shape[1]:
        raise ValueError(f"{len(names)} names for {votes.shape[1]} LFs")
    n = max(len(votes), 1)
    voted = votes >= 0
    n_voting = voted.sum(axis=1)
    positives = (votes == 1).sum(axis=1)
    negatives = (votes == 0).sum(axis=1)
    stats = []
    for j, name in enumerate(names):
        mine = voted[:, j]
        others_pos = positives - (votes[:, j] == 1)
        others_neg = negatives - (votes[:, j] == 0)
        disagree = np.where(votes[:, j] == 1, others_neg > 0, others_pos > 0)
        accuracy, gold_votes = None, 0
        if gold is not None:
            known = (np.asarray(gold) >= 0) & mine
            gold_votes = int(known.sum())
            if gold_votes:
                accuracy = float((votes[known, j] == np.asarray(gold)[known]).mean())
        stats.append(
            LFStats(
                name=name,
                coverage=float(mine.sum() / n),
                overlap=float((mine & (n_voting > 1)).sum() / n),
                conflict=float((mine & disagree).sum() / n),
                positive_votes=int((votes[:, j] == 1).sum()),
                negative_votes=int((votes[:, j] == 0).sum()),
                accuracy=accuracy,
                gold_votes=gold_votes,
            )
        )
    return stats


def accuracy(probabilities: np.ndarray, gold: np.ndarray, threshold: float = 0.5) -> float:
    """Accuracy of thresholded probabilities on the rows where gold is 0/1."""
    gold = np.asarray(gold)
    known = gold >= 0
    if not known.any():
        raise ValueError("no gold labels (0/1) to score against")
    return float(((probabilities[known] >= threshold).astype(int) == gold[known]).mean())
