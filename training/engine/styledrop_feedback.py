"""StyleDrop's feedback: which generations of one iteration the next one trains on.

`select_by_feedback` scores by CLIP (text score against the content prompt x style score
against the references) or asks a human callback for pass/fail; `selection_stats` is what the
Django side shows per iteration. Used by the `styledrop_iterative` recipe.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Generation:
    """One generated image under review. `prompt` is the content prompt without the descriptor,
    so the text score measures content fidelity and not the descriptor's words."""

    id: str
    prompt: str
    image: Any  # PIL image or path
    seed: int | None = None
    # what the recipe knows about the image (sha256, full prompt, sampler, iteration, checkpoint),
    # so a human-feedback callback can create its annotation tasks without reading files back
    metadata: dict[str, Any] = field(default_factory=dict)


class FeedbackPending(Exception):
    """Raised by a human-feedback callback while annotators have not judged the generations yet.

    The `styledrop_iterative` driver saves its state before asking for feedback and lets this
    propagate: the generations stay on disk under the same ids, and running the recipe again with
    the same config and output_dir resumes at the selection (nothing is retrained or regenerated).
    On the way out the driver sets `iteration` (which iteration's generations wait) and
    `generations`; `details` is whatever the callback passed (e.g. an annotation round id).
    """

    def __init__(self, message: str = "waiting for annotators", **details: Any) -> None:
        super().__init__(message)
        self.details = details
        self.iteration: int | None = None
        self.generations: list[Generation] = []


@dataclass
class Decision:
    generation_id: str
    selected: bool
    score: float | None = None
    text_score: float | None = None
    style_score: float | None = None
    reason: str = ""


def _score(decision: Decision) -> float:
    """The score of a decision already known to be scored (ranked ones are)."""
    assert decision.score is not None
    return decision.score


@dataclass
class FeedbackSelection:
    mode: str
    selected: list[Generation]
    decisions: list[Decision]

    @property
    def rejected_ids(self) -> list[str]:
        return [d.generation_id for d in self.decisions if not d.selected]


HumanFeedback = Callable[[Sequence[Generation]], Mapping[str, bool]]


def select_by_feedback(
    generations: Sequence[Generation],
    mode: Literal["clip", "human"] = "clip",
    *,
    clip: Any = None,
    style_references: Sequence[Any] = (),
    threshold: float | None = None,
    top_k: int | None = None,
    human_feedback: HumanFeedback | None = None,
) -> FeedbackSelection:
    """Pick the generations the next StyleDrop iteration trains on.

    `clip`: score = max(text score, 0) x max(style score, 0) (cosines from `metrics`, clamped so
    two negative cosines never multiply into a good score); keep those >= `threshold` and/or the
    best `top_k` (at least one of the two is required). `clip` is a `metrics` encoder bundle.
    `human`: `human_feedback(generations)` returns {generation id: passed}; a generation without a
    judgement is not selected (reason "no judgement"), never guessed. The callback may raise
    `FeedbackPending` to say the judgements are not in yet; it propagates unchanged.
    A generation whose image cannot be scored is rejected with the reason, not the batch.
    """
    if mode == "human":
        return _select_by_human(generations, human_feedback)
    if mode != "clip":
        raise ValueError(f"mode: expected 'clip' or 'human', got {mode!r}")
    if clip is None:
        raise ValueError("clip: a CLIP encoder bundle is required for mode='clip'")
    if not style_references:
        raise ValueError("style_references: at least one style reference image is required")
    if threshold is None and top_k is None:
        raise ValueError("threshold/top_k: give a score threshold, a top_k, or both")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: must be >= 1, got {top_k}")
    from training.engine import metrics

    images = [g.image for g in generations]
    errors: list[tuple[int, str]] = []
    image_embeddings = metrics.embed_images(clip, images, errors=errors)
    text_embeddings = metrics.embed_texts(clip, [g.prompt for g in generations])
    text = metrics.cosine_pairs(image_embeddings, text_embeddings)
    reference_embeddings = metrics.embed_images(clip, list(style_references))
    style = metrics.mean_similarity(image_embeddings, reference_embeddings)
    failed = dict(errors)
    scored: list[Decision] = []
    for index, generation in enumerate(generations):
        t, s = float(text[index]), float(style[index])
        if index in failed or math.isnan(t) or math.isnan(s):
            reason = failed.get(index, "could not be scored")
            scored.append(Decision(generation.id, False, reason=f"unscorable: {reason}"))
            continue
        score = max(t, 0.0) * max(s, 0.0)
        scored.append(Decision(generation.id, True, score, t, s))
    ranked = sorted((d for d in scored if d.score is not None), key=lambda d: -_score(d))
    passing = [d for d in ranked if threshold is None or _score(d) >= threshold]
    keep = {d.generation_id for d in (passing[:top_k] if top_k is not None else passing)}
    for decision in ranked:
        decision.selected = decision.generation_id in keep
        if not decision.selected:
            below = threshold is not None and _score(decision) < threshold
            decision.reason = "below threshold" if below else "outside top_k"
    by_id = {g.id: g for g in generations}
    selected = [by_id[d.generation_id] for d in ranked if d.generation_id in keep]
    return FeedbackSelection("clip", selected, scored)


def _select_by_human(
    generations: Sequence[Generation], human_feedback: HumanFeedback | None
) -> FeedbackSelection:
    if human_feedback is None:
        raise ValueError("human_feedback: a callback returning {generation id: passed} is required")
    verdicts = dict(human_feedback(generations))
    known = {g.id for g in generations}
    stray = sorted(set(verdicts) - known)
    if stray:
        raise ValueError(f"human_feedback: verdicts for unknown generation ids {stray[:5]}")
    decisions, selected = [], []
    for generation in generations:
        verdict = verdicts.get(generation.id)
        if verdict is None:
            decisions.append(Decision(generation.id, False, reason="no judgement"))
            continue
        passed = bool(verdict)
        decisions.append(Decision(generation.id, passed, reason="" if passed else "failed review"))
        if passed:
            selected.append(generation)
    return FeedbackSelection("human", selected, decisions)


def selection_stats(selection: FeedbackSelection) -> dict[str, Any]:
    """What the Django side shows per iteration: counts, ids, reasons and mean scores."""

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None and not math.isnan(v)]
        return sum(kept) / len(kept) if kept else None

    decisions = selection.decisions
    chosen = [d for d in decisions if d.selected]
    return {
        "mode": selection.mode,
        "generated": len(decisions),
        "selected": len(chosen),
        "rejected": len(decisions) - len(chosen),
        "selected_ids": [g.id for g in selection.selected],
        "rejection_reasons": dict(Counter(d.reason for d in decisions if not d.selected)),
        "mean_score": mean([d.score for d in decisions]),
        "mean_score_selected": mean([d.score for d in chosen]),
        "mean_text_score": mean([d.text_score for d in decisions]),
        "mean_style_score": mean([d.style_score for d in decisions]),
    }
