"""The demo's pseudo-ratings follow the images' content, never database ids (DEMO DATA only:
nothing here asserts what a rating *should* be, only that it is reproducible)."""

from __future__ import annotations

import pytest

from curation.models import AnnotationRound
from curation.services.demo_rounds import pseudo_result, task_images
from curation.services.rounds.create import create_round

Kind = AnnotationRound.Kind


def _ratings(round_: AnnotationRound, annotator: str) -> list:
    tasks = round_.tasks.filter(is_gold=False).select_related(
        "image", "generation__image", "other_generation__image"
    )
    return sorted(
        (task_images(t), pseudo_result(round_.kind, task_images(t), annotator)) for t in tasks
    )


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [Kind.ALIGNMENT, Kind.STYLE])
def test_the_same_images_get_the_same_ratings_under_other_ids(make_batch, kind) -> None:
    # Two batches with other generation and task ids (as a retried or resumed run allocates)
    # over the same image content.
    texts = ["cat", "dog", "fox", "owl", "bee", "elk"]
    first = make_batch("first", texts)
    make_batch("filler", ["x", "y"], image_offset=100)  # shifts every id of what follows
    second = make_batch("second", texts)
    rounds = [
        create_round(name=f"r{i}", kind=kind, generation_batch=b, gold_rate=0.0, members=[])
        for i, b in enumerate((first, second))
    ]
    keys = [set(r.tasks.values_list("key", flat=True)) for r in rounds]
    assert not keys[0] & keys[1]  # nothing id-derived is shared
    assert _ratings(rounds[0], "annotator1") == _ratings(rounds[1], "annotator1")
    # Annotators differ from each other (noise), so the demo shows some disagreement.
    assert _ratings(rounds[0], "annotator1") != _ratings(rounds[0], "annotator2")


def test_a_pairwise_vote_follows_the_image_whichever_side_it_is_drawn_on() -> None:
    a, b = "a" * 64, "b" * 64
    for annotator in ("annotator1", "annotator2", "annotator3"):
        left = pseudo_result(Kind.PAIRWISE, (a, b), annotator)
        swapped = pseudo_result(Kind.PAIRWISE, (b, a), annotator)
        assert {left[0]["value"]["choices"][0], swapped[0]["value"]["choices"][0]} == {
            "left",
            "right",
        }
