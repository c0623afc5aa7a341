"""DEMO ONLY: scripted annotators who answer from what the toy CLIP sees in the image.

When the evaluation CLIP is the toy world's (scripts/demo sets EVAL_CLIP_WEIGHTS to it), the
demo's three annotators read each image with it (`training.engine.toy_world.judge`): aligned
when the toy CLIP ranks the image's own prompt near the top of the world's captions, passed when
it finds the image closer to "a sticker of P" than to "a photo of P" — the same verdict the
trade-off sweep's style pass rate counts. Each annotator reads the signal through their own
seeded noise and now and then clicks the other answer, so they disagree where the toy CLIP is
unsure and agreement and gold checks still measure something.

Every number is a pure function of the image's bytes (its sha256 and content), the prompt, the
annotator's username and the task kind: a retried or resumed run rates the same images the same
way. These are scripted answers from a model, not human judgements; the round says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from curation.labelstudio import results
from curation.models import AnnotationRound, LabelTask
from curation.services.storage import read_bytes

Kind = AnnotationRound.Kind

# The prompt must beat this fraction of the world's other captions (the top 9 of 36) for an
# annotator to call the image aligned: the toy base follows its prompt only loosely.
ALIGNED_AT = 0.75
PASSED_AT = 0.5
# How far one annotator's reading strays from the toy CLIP's (uniform, ± half of this), and how
# often they click the other answer whatever they read.
NOISE = 0.3
SLIP_RATE = 0.08


def _unit(*parts: Any) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def toy_judge_from_settings() -> Any:
    """The toy CLIP judge when EVAL_CLIP_WEIGHTS is the toy world's CLIP, else None."""
    from training.services.eval_scorer import toy_world_info

    weights = getattr(settings, "EVAL_CLIP_WEIGHTS", "") or ""
    if toy_world_info(weights) is None:
        return None
    from training.engine.toy_world.judge import ToyJudge

    return ToyJudge(weights)


def task_shown(task: LabelTask) -> list[tuple[str, str, str]]:
    """(sha256, storage key, prompt) of each image the task shows, in display order; the prompt
    is the bare one, without the style words the model was sent, as the sweep scores text."""
    shown = [
        (g.image.sha256, g.image.storage_key, g.prompt.text)
        for g in (task.generation, task.other_generation)
        if g is not None
    ]
    if not shown and task.image_id is not None:
        shown.append((task.image.sha256, task.image.storage_key, task.prompt))
    if not shown:
        raise ValueError(f"task {task.key}: shows no image to rate")
    return shown


class ToySignalCache:
    """Signals per (sha256, prompt), read once for all annotators of a round."""

    def __init__(self, judge: Any) -> None:
        self.judge = judge
        self._signals: dict[tuple[str, str], Any] = {}

    def prefetch(self, tasks: Sequence[LabelTask]) -> None:
        wanted = {
            (sha, prompt): key
            for task in tasks
            for sha, key, prompt in task_shown(task)
            if (sha, prompt) not in self._signals
        }
        items = list(wanted.items())
        read = self.judge.signals([(read_bytes(key), prompt) for (_, prompt), key in items])
        self._signals.update({pair: s for (pair, _), s in zip(items, read, strict=True)})

    def __getitem__(self, pair: tuple[str, str]) -> Any:
        return self._signals[pair]


def _reading(value: float, kind: str, sha256: str, annotator: str) -> float:
    noise = (_unit("reading", kind, sha256, annotator) - 0.5) * NOISE
    return min(max(value + noise, 0.0), 0.999)


def _verdict(reading: float, threshold: float, kind: str, sha256: str, annotator: str) -> bool:
    said = reading >= threshold
    return not said if _unit("slip", kind, sha256, annotator) < SLIP_RATE else said


def toy_result(
    kind: str,
    shown: Sequence[tuple[str, str, str]],
    signals: ToySignalCache,
    annotator: str,
    gold_answer: dict | None = None,
) -> list[dict[str, Any]]:
    """DEMO DATA from the toy CLIP: one annotator's result for a task showing `shown`."""
    if kind == Kind.PAIRWISE:
        preferred = gold_answer.get("preferred") if gold_answer else None
        if preferred is None:
            # Better = the image the annotator reads as more aligned and more sticker-like.
            value = [
                _reading(
                    (signals[(sha, p)].alignment + signals[(sha, p)].style) / 2,
                    kind,
                    sha,
                    annotator,
                )
                for sha, _, p in shown
            ]
            preferred = "left" if value[0] >= value[1] else "right"
        return results.pairwise_result(preferred)
    ((sha, _, prompt),) = shown
    signal = signals[(sha, prompt)]
    if kind == Kind.ALIGNMENT:
        reading = _reading(signal.alignment, kind, sha, annotator)
        aligned = (
            gold_answer["aligned"]
            if gold_answer and "aligned" in gold_answer
            else _verdict(reading, ALIGNED_AT, kind, sha, annotator)
        )
        return results.alignment_result(bool(aligned), 1 + int(reading * 5))
    reading = _reading(signal.style, kind, sha, annotator)
    passed = (
        gold_answer["passed"]
        if gold_answer and "passed" in gold_answer
        else _verdict(reading, PASSED_AT, kind, sha, annotator)
    )
    return results.style_result(bool(passed), 1 + int(reading * 5))
