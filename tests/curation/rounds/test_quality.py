"""Agreement, gold flagging, who counts, aggregation and curation, on annotation rows directly."""

from __future__ import annotations

import io

import krippendorff
import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.models import (
    Annotation,
    AnnotationRound,
    AnnotatorAccount,
    AnnotatorRoundStats,
    DatasetVersion,
    GoldItem,
    Judgement,
)
from curation.services.aggregation import compute_round_quality
from curation.services.agreement import Vote, agreement
from curation.services.curation import curate_round
from curation.services.rounds.create import create_pairwise_round, create_round
from curation.services.storage import read_bytes

from .conftest import make_image

pytestmark = pytest.mark.django_db
_next_id = iter(range(1, 10_000))


def _accounts(users):
    return [
        AnnotatorAccount.objects.create(user=u, email=u.email, labelstudio_user_id=100 + i)
        for i, u in enumerate(users)
    ]


def _annotate(task, account_or_ls_id, **fields):
    ls_id = getattr(account_or_ls_id, "labelstudio_user_id", account_or_ls_id)
    return Annotation.objects.create(
        task=task,
        labelstudio_id=next(_next_id),
        labelstudio_user_id=ls_id,
        annotator=getattr(account_or_ls_id, "user", None),
        raw={"result": []},
        **fields,
    )


@pytest.fixture
def alignment_round(make_batch):
    batch = make_batch("b", [f"fox {i}" for i in range(6)])
    gold = [
        GoldItem(image=make_image(500), prompt="g0", answer={"aligned": True}),
        GoldItem(image=make_image(501), prompt="g1", answer={"aligned": False}),
    ]
    return create_round(
        name="q",
        kind="alignment",
        generation_batch=batch,
        gold=gold,
        gold_rate=0.34,
        gold_accuracy_threshold=0.7,
        min_gold_answered=2,
    )


def test_gold_flags_the_careless_annotator_and_aggregation_ignores_them(
    alignment_round, make_annotators, data_lead
):
    a, b, c = _accounts(make_annotators(3))
    tasks = list(alignment_round.tasks.order_by("pk"))
    regular = [t for t in tasks if not t.is_gold]
    truth = [True, True, True, True, False, False]
    for task, aligned in zip(regular, truth, strict=True):
        _annotate(task, a, aligned=aligned, rating=5 if aligned else 1)
        _annotate(task, b, aligned=aligned, rating=4 if aligned else 2)
        _annotate(task, c, aligned=not aligned, rating=3)
    for task in (t for t in tasks if t.is_gold):
        answer = task.gold_answer["aligned"]
        _annotate(task, a, aligned=answer)
        _annotate(task, b, aligned=answer)
        _annotate(task, c, aligned=not answer)
    # The Label Studio admin (no platform annotator account) votes too: never counted.
    _annotate(regular[4], 1, aligned=True)
    _annotate(regular[5], 1, aligned=True)
    # Deleted and skipped annotations are not counted either.
    _annotate(regular[5], a, aligned=True, deleted=True)
    _annotate(regular[5], b, was_cancelled=True)

    quality = compute_round_quality(alignment_round)
    assert quality["flagged_annotators"] == [c.email]
    assert quality["counted_annotations"] == 24 and quality["uncounted_annotations"] == 2
    assert quality["used_annotations"] == 16 and quality["skipped_annotations"] == 1
    assert quality["agreement"]["aligned"]["alpha"] == pytest.approx(1.0)
    assert quality["agreement"]["aligned"]["percent"] == pytest.approx(1.0)
    assert quality["agreement_all_counted"]["aligned"]["alpha"] < 0
    # Ordinal alpha on ratings matches the library called directly (a and b on 6 tasks).
    expected = krippendorff.alpha(
        reliability_data=np.array([[5, 5, 5, 5, 1, 1], [4, 4, 4, 4, 2, 2]], dtype=float),
        level_of_measurement="ordinal",
    )
    assert quality["agreement"]["rating"]["alpha"] == pytest.approx(expected)

    stats = {s.label: s for s in AnnotatorRoundStats.objects.filter(round=alignment_round)}
    assert stats[c.email].flagged and stats[c.email].gold_accuracy == 0.0
    assert stats[a.email].gold_accuracy == 1.0 and not stats[a.email].flagged
    # Consensus is the others' majority, never one's own vote: for a, the others (b and c)
    # always split, so a has no consensus to agree with; c always disagrees with a and b.
    assert stats[a.email].consensus_agreement is None
    assert stats[c.email].consensus_agreement == 0.0
    assert stats[c.email].gold_accuracy_high < 0.7 and "interval" in stats[c.email].excluded_reason
    assert stats["labelstudio-user-1"].counted is False

    judgements = {j.task_id: j for j in Judgement.objects.filter(task__round=alignment_round)}
    assert len(judgements) == 6  # gold tasks are not aggregated
    for task, aligned in zip(regular, truth, strict=True):
        value = judgements[task.pk].value
        assert value["aligned"] is aligned and value["aligned_dawid_skene"] is aligned
        assert value["votes"] == 2 and judgements[task.pk].confidence == 1.0

    AnnotationRound.objects.filter(pk=alignment_round.pk).update(state="annotating")
    version = curate_round(alignment_round, data_lead)
    assert version.state == DatasetVersion.State.FROZEN and version.dataset.kind == "alignment"
    table = pq.read_table(io.BytesIO(read_bytes(version.manifest_path)))
    expected_rows = {(t.generation.image.sha256, t.generation.prompt_text) for t in regular[:4]}
    rows = zip(table["image_sha256"].to_pylist(), table["caption"].to_pylist(), strict=True)
    assert set(rows) == expected_rows
    assert version.lineage["round"] == alignment_round.pk
    assert version.lineage["annotations"] == 24 and version.lineage["annotations_used"] == 16
    assert version.lineage["flagged_annotators"] == [c.email]
    assert version.lineage["agreement"]["aligned"]["alpha"] == pytest.approx(1.0)
    assert sorted(version.lineage["generations"]) == sorted(t.generation_id for t in regular[:4])
    assert version.lineage["rules"]["method"] == "majority"
    alignment_round.refresh_from_db()
    assert alignment_round.state == "curated" and alignment_round.result_version == version


def test_a_user_who_left_the_annotator_role_stops_counting(alignment_round, make_annotators):
    a, b = _accounts(make_annotators(2))
    task = alignment_round.tasks.filter(is_gold=False).first()
    _annotate(task, a, aligned=True)
    _annotate(task, b, aligned=False)
    b.user.groups.clear()
    quality = compute_round_quality(alignment_round)
    assert quality["counted_annotations"] == 1
    assert Judgement.objects.get(task=task).value["aligned"] is True


def test_style_rules_threshold_on_mean_rating(make_batch, make_annotators, data_lead):
    batch = make_batch("s", ["a", "b", "c"])
    round_ = create_round(name="s", kind="style", generation_batch=batch, gold_rate=0)
    AnnotationRound.objects.filter(pk=round_.pk).update(state="closed")
    accounts = _accounts(make_annotators(3))
    plan = {  # task index -> (passes, ratings)
        0: ([True, True, True], [5, 4, 4]),  # mean 4.33: in
        1: ([True, True, False], [4, 4, 3]),  # passed by majority, mean 3.67: out at 4.0
        2: ([False, False, True], [5, 5, 5]),  # failed by majority: out
    }
    tasks = list(round_.tasks.order_by("pk"))
    for index, (passes, ratings) in plan.items():
        for account, passed, stars in zip(accounts, passes, ratings, strict=True):
            _annotate(tasks[index], account, passed=passed, rating=stars)
    version = curate_round(round_, data_lead)
    assert set(version.items.values_list("image_id", flat=True)) == {tasks[0].generation.image_id}
    assert version.lineage["rules"]["min_rating"] == 4.0
    # A lower threshold set by the data lead lets task 1 in, recorded in the new lineage.
    AnnotationRound.objects.filter(pk=round_.pk).update(state="closed")
    looser = curate_round(round_, data_lead, rules={"min_rating": 3.5})
    assert looser.items.count() == 2 and looser.lineage["rules"]["min_rating"] == 3.5


def test_pairwise_wins_and_bradley_terry(make_batch, make_annotators):
    a = make_batch("A", [f"p{i}" for i in range(4)])
    b = make_batch("B", [f"p{i}" for i in range(4)], image_offset=50)
    round_ = create_pairwise_round(a, b, gold_rate=0)
    accounts = _accounts(make_annotators(3))
    for task in round_.tasks.select_related("generation"):
        a_side = "left" if task.generation.batch_id == a.pk else "right"
        b_side = "right" if a_side == "left" else "left"
        for i, account in enumerate(accounts):
            # Batch A wins every task 2 votes to 1.
            _annotate(task, account, preferred=a_side if i < 2 else b_side)
    quality = compute_round_quality(round_)
    assert quality["pairwise"]["wins_a"] == 8 and quality["pairwise"]["wins_b"] == 4
    scores = quality["pairwise"]["bradley_terry"]
    assert scores[str(a.pk)] > scores[str(b.pk)]
    for judgement in Judgement.objects.filter(task__round=round_):
        assert judgement.value["winner_batch"] == a.pk and judgement.value["votes"] == 3


def test_agreement_is_undefined_not_crashing_with_one_value():

    rows = [
        Vote(
            task_id=t,
            is_gold=False,
            worker=w,
            aligned=True,
            passed=None,
            rating=None,
            preferred="",
            issues=[],
        )
        for t in (1, 2)
        for w in (1, 2)
    ]
    measured = agreement(rows, "aligned", "nominal")
    assert measured["alpha"] is None and measured["percent"] == 1.0 and "domain" in measured["note"]
