"""Creating rounds: tasks from batches or images, gold mixed in, pairwise pairing, bad input."""

from __future__ import annotations

import pytest

from curation.models import AnnotationRound, GoldItem, LabelTask
from curation.services.gold import validate_gold
from curation.services.rounds.create import create_pairwise_round, create_round
from curation.services.rounds.push import task_payload

from .conftest import make_image

pytestmark = pytest.mark.django_db


def test_alignment_round_mixes_gold_evenly_and_deterministically(make_batch):
    batch = make_batch("b1", [f"cat {i}" for i in range(20)])
    gold = [
        GoldItem(image=make_image(900 + i), prompt=f"gold {i}", answer={"aligned": i % 2 == 0})
        for i in range(10)
    ]
    round_ = create_round(
        name="r", kind="alignment", generation_batch=batch, gold=gold, gold_rate=0.2, overlap=3
    )
    tasks = list(round_.tasks.order_by("pk"))
    assert len(tasks) == 24  # 20 generations + 20 % gold
    gold_tasks = [t for t in tasks if t.is_gold]
    assert len(gold_tasks) == 4
    assert all(t.gold_answer in ({"aligned": True}, {"aligned": False}) for t in gold_tasks)
    positions = [i for i, t in enumerate(tasks) if t.is_gold]
    # One gold task in each fifth of the queue, not all at the start or the end.
    assert [p * 4 // len(tasks) for p in positions] == [0, 1, 2, 3]
    regular = [t for t in tasks if not t.is_gold]
    assert [t.generation for t in regular] == list(batch.generations.order_by("pk"))
    assert len({t.key for t in tasks}) == 24
    assert (
        regular[0].prompt == "sticker of cat 0" and regular[0].image == regular[0].generation.image
    )


def test_round_from_plain_images_uses_their_captions(db):
    images = [make_image(i, caption=f"caption {i}") for i in range(3)]
    round_ = create_round(name="imgs", kind="style", images=images, gold_rate=0.0)
    assert [(t.image, t.prompt) for t in round_.tasks.order_by("pk")] == [
        (im, f"caption {i}") for i, im in enumerate(images)
    ]


def test_pairwise_pairs_same_prompt_and_seed_and_balances_sides(make_batch):
    a = make_batch("ckpt-a", [f"dog {i}" for i in range(12)], seeds=(1, 2))
    b = make_batch("ckpt-b", [f"dog {i}" for i in range(12)], seeds=(1,), image_offset=100)
    round_ = create_pairwise_round(a, b, overlap=2)
    assert round_.kind == AnnotationRound.Kind.PAIRWISE and round_.other_generation_batch == b
    tasks = list(round_.tasks.select_related("generation", "other_generation"))
    assert len(tasks) == 12  # seed 2 has no partner in batch b
    for task in tasks:
        left, right = task.generation, task.other_generation
        assert (left.prompt_id, left.seed) == (right.prompt_id, right.seed)
        assert {left.batch_id, right.batch_id} == {a.pk, b.pk}
    a_on_left = sum(t.generation.batch_id == a.pk for t in tasks)
    assert 0 < a_on_left < 12
    payload = task_payload(tasks[0], [])["data"]
    # Blinded: the task says nothing about generations, batches, checkpoints or seeds.
    assert set(payload) == {"task_key", "round_id", "prompt", "image_a", "image_b"}
    assert payload["image_a"].startswith("http") and "/media/" in payload["image_a"]
    # The side is a coin per task, not a function of the ids: another round over the same
    # batches (same keys) flips at least one task differently.
    sides = {t.key: t.generation_id for t in tasks}
    others = [create_pairwise_round(a, b) for _ in range(4)]
    assert any({t.key: t.generation_id for t in r.tasks.all()} != sides for r in others)
    assert all({t.key for t in r.tasks.all()} == set(sides) for r in others)


def test_bad_input_is_refused_with_the_field_named(make_batch):
    batch = make_batch("b", ["x"])
    with pytest.raises(ValueError, match=r"gold\[1\]\.answer\.aligned: expected bool"):
        validate_gold(
            "alignment",
            [
                GoldItem(image=make_image(1), answer={"aligned": True}),
                GoldItem(image=make_image(2), answer={"aligned": "yes"}),
            ],
        )
    with pytest.raises(ValueError, match=r"gold\[0\]\.answer\.preferred"):
        validate_gold("alignment", [GoldItem(image=make_image(1), answer={"preferred": "left"})])
    with pytest.raises(ValueError, match="overlap"):
        create_round(name="r", kind="alignment", generation_batch=batch, overlap=0)
    with pytest.raises(ValueError, match="exactly one"):
        create_round(name="r", kind="alignment")
    with pytest.raises(ValueError, match="other_generation_batch"):
        create_round(name="r", kind="pairwise", generation_batch=batch)
    with pytest.raises(ValueError, match="kind"):
        create_round(name="r", kind="ranking", generation_batch=batch)
    assert not LabelTask.objects.exists() and not AnnotationRound.objects.exists()


def test_task_payload_carries_our_ids_and_no_gold_hint(make_batch):
    batch = make_batch("b", ["owl"])
    gold = [GoldItem(image=make_image(50), prompt="an owl", answer={"passed": True})]
    round_ = create_round(
        name="s",
        kind="style",
        generation_batch=batch,
        gold=gold,
        gold_rate=1.0,
        style_exemplars=[make_image(60)],
    )
    by_gold = {t.is_gold: t for t in round_.tasks.all()}
    regular = task_payload(by_gold[False], ["http://x/e.png"])["data"]
    assert regular["task_key"] == by_gold[False].key and regular["round_id"] == round_.pk
    assert "generation_id" not in regular and "image_id" not in regular
    assert regular["prompt"] == "sticker of owl" and regular["exemplar_1"] == "http://x/e.png"
    hidden = task_payload(by_gold[True], [])
    assert "gold" not in str(hidden) and by_gold[True].key.startswith("t")
