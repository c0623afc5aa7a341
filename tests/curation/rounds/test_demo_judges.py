"""The demo's toy-CLIP annotators: their answers follow what the judge reads in the image's bytes,
never database ids, and the three of them disagree some of the time (DEMO DATA: the real judge,
the toy CLIP, is tested in tests/training/toy_world/test_judge.py; here a stand-in reads a
signal from each image's bytes so the annotators' side is tested without torch)."""

from __future__ import annotations

import hashlib

import pytest

from curation.models import AnnotationRound
from curation.services.demo_judges import ToySignalCache, task_shown, toy_result
from curation.services.rounds.create import create_round
from training.engine.toy_world.judge import ToySignals

Kind = AnnotationRound.Kind
ANNOTATORS = ("annotator1", "annotator2", "annotator3")


class BytesJudge:
    """Signals from the image bytes alone: a stand-in for the toy CLIP."""

    def __init__(self) -> None:
        self.read = 0

    def signals(self, items):
        self.read += len(items)
        out = []
        for data, prompt in items:
            u = hashlib.sha256(data + prompt.encode()).digest()[0] / 255
            out.append(ToySignals(alignment=u, rank=1 + int((1 - u) * 35), style=u))
        return out


def _answers(round_: AnnotationRound, judge: BytesJudge) -> list:
    tasks = list(
        round_.tasks.filter(is_gold=False).select_related(
            "image", "generation__image", "generation__prompt"
        )
    )
    cache = ToySignalCache(judge)
    cache.prefetch(tasks)
    return sorted(
        (
            task_shown(t)[0][0],
            tuple(str(toy_result(round_.kind, task_shown(t), cache, a)) for a in ANNOTATORS),
        )
        for t in tasks
    )


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [Kind.ALIGNMENT, Kind.STYLE])
def test_answers_follow_the_image_bytes_under_other_ids_and_annotators_disagree(make_batch, kind):
    texts = [f"prompt {i}" for i in range(24)]
    first = make_batch("first", texts)
    make_batch("filler", ["x", "y"], image_offset=100)  # shifts every id of what follows
    second = make_batch("second", texts)
    rounds = [
        create_round(name=f"r{i}", kind=kind, generation_batch=b, gold_rate=0.0, members=[])
        for i, b in enumerate((first, second))
    ]
    judge = BytesJudge()
    answers = [_answers(r, judge) for r in rounds]
    assert answers[0] == answers[1]
    assert judge.read == 2 * len(texts)  # one reading per image, shared by the annotators
    assert any(len(set(votes)) > 1 for _, votes in answers[0])  # some disagreement
    assert any(len(set(votes)) == 1 for _, votes in answers[0])  # and some agreement


@pytest.mark.django_db
def test_verdicts_follow_the_signal_but_annotators_slip_now_and_then(make_batch):
    round_ = create_round(
        name="r",
        kind=Kind.STYLE,
        generation_batch=make_batch("b", [f"p{i}" for i in range(60)]),
        gold_rate=0.0,
        members=[],
    )
    tasks = list(round_.tasks.select_related("generation__image", "generation__prompt"))

    class Fixed:
        def __init__(self, style: float) -> None:
            self.style = style

        def signals(self, items):
            return [ToySignals(alignment=0.5, rank=18, style=self.style) for _ in items]

    for style, expected in ((0.97, True), (0.03, False)):
        cache = ToySignalCache(Fixed(style))
        cache.prefetch(tasks)
        votes = [
            toy_result(Kind.STYLE, task_shown(t), cache, a)[0]["value"]["choices"][0] == "pass"
            for t in tasks
            for a in ANNOTATORS
        ]
        agreeing = sum(v == expected for v in votes) / len(votes)
        assert 0.8 < agreeing < 1.0, (style, agreeing)
