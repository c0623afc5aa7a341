"""Gold that works: a pool marked in the admin, mixed into every round however it is made, and
annotators judged on an interval only once they answered enough gold."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.models import Annotation, AnnotationRound, AnnotatorAccount, GoldItem, Judgement
from curation.services.aggregation import compute_round_quality
from curation.services.gold import add_gold_from_round, wilson_interval
from curation.services.rounds.create import create_round

from .conftest import make_image

pytestmark = pytest.mark.django_db
_ids = iter(range(50_000, 60_000))


def _account(user, ls_id):
    return AnnotatorAccount.objects.create(user=user, email=user.email, labelstudio_user_id=ls_id)


def _vote(task, account, aligned):
    Annotation.objects.create(
        task=task,
        labelstudio_id=next(_ids),
        labelstudio_user_id=account.labelstudio_user_id,
        annotator=account.user,
        raw={"result": []},
        aligned=aligned,
    )


def test_wilson_interval_matches_the_textbook():
    low, high = wilson_interval(8, 10, 0.95)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)
    assert wilson_interval(5, 5, 0.95)[1] == 1.0


@pytest.fixture
def pool():
    return [
        GoldItem.objects.create(
            kind="alignment",
            image=make_image(3000 + i),
            prompt=f"gold {i}",
            answer={"aligned": i % 2 == 0},
        )
        for i in range(8)
    ]


def test_annotator_is_excluded_only_once_enough_gold_is_answered(pool, make_batch, make_annotators):
    batch = make_batch("g", [f"owl {i}" for i in range(8)])
    round_ = create_round(
        name="gold",
        kind="alignment",
        generation_batch=batch,
        gold_rate=1.0,  # every pool item, drawn from the pool by default
        gold_accuracy_threshold=0.7,
        min_gold_answered=4,
        gold_confidence=0.95,
    )
    gold_tasks = list(round_.tasks.filter(is_gold=True).order_by("pk"))
    assert len(gold_tasks) == 8
    careful, careless, one_miss = (_account(u, 900 + i) for i, u in enumerate(make_annotators(3)))

    def answer(account, tasks, right):
        for task in tasks:
            truth = task.gold_answer["aligned"]
            _vote(task, account, truth if right else not truth)

    answer(careful, gold_tasks[:5], right=True)
    answer(careless, gold_tasks[:3], right=False)  # 0 of 3: below the minimum, still counted
    answer(one_miss, gold_tasks[:4], right=True)
    answer(one_miss, gold_tasks[4:5], right=False)  # 4 of 5: one miss excludes nobody
    compute_round_quality(round_)
    stats = {s.labelstudio_user_id: s for s in round_.annotator_stats.all()}
    low, high = wilson_interval(0, 3, 0.95)
    assert not stats[901].flagged and stats[901].excluded_reason == ""
    assert (stats[901].gold_accuracy_low, stats[901].gold_accuracy_high) == pytest.approx(
        (low, high)
    )
    assert high < 0.7  # below the threshold already, but too few answers to judge
    assert not stats[902].flagged and stats[902].gold_accuracy == 0.8
    assert not stats[900].flagged

    answer(careless, gold_tasks[3:4], right=False)  # the fourth gold answer: now judged
    quality = compute_round_quality(round_)
    stats = {s.labelstudio_user_id: s for s in round_.annotator_stats.all()}
    assert stats[901].flagged and quality["flagged_annotators"] == [careless.email]
    low, high = wilson_interval(0, 4, 0.95)
    reason = stats[901].excluded_reason
    assert f"[{low:.2f}, {high:.2f}]" in reason and "0/4" in reason
    assert quality["excluded"] == {careless.email: reason}
    assert quality["gold_policy"]["min_gold_answered"] == 4


def test_rounds_from_the_api_and_the_admin_get_gold_from_the_pool(
    pool, make_batch, data_lead, api_client, client
):
    batch = make_batch("p", [f"cat {i}" for i in range(10)])
    api_client.force_authenticate(data_lead)
    made = api_client.post(
        "/api/rounds/",
        {"name": "api", "kind": "alignment", "generation_batch": batch.pk, "gold_rate": 0.2},
        format="json",
    )
    assert made.status_code == 201, made.content
    via_api = AnnotationRound.objects.get(pk=made.json()["id"])
    assert via_api.tasks.filter(is_gold=True).count() == 2
    assert via_api.tasks.filter(is_gold=False).count() == 10

    client.force_login(data_lead)
    response = client.post(
        reverse("admin:curation_annotationround_add"),
        {
            "name": "admin",
            "kind": "alignment",
            "generation_batch": batch.pk,
            "overlap": 3,
            "gold_rate": 0.3,
            "gold_accuracy_threshold": 0.7,
            "min_gold_answered": 3,
            "gold_confidence": 0.9,
            "curation_rules": "{}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    via_admin = AnnotationRound.objects.get(name="admin")
    assert via_admin.tasks.filter(is_gold=True).count() == 3
    assert via_admin.min_gold_answered == 3 and via_admin.created_by == data_lead


def test_no_gold_in_the_pool_is_said_on_the_round(make_batch):
    batch = make_batch("n", ["a fox"])
    round_ = create_round(name="no gold", kind="alignment", generation_batch=batch)
    assert not round_.tasks.filter(is_gold=True).exists()
    assert round_.notices.get().kind == "no_gold"


def test_high_agreement_judgements_become_gold_with_one_action(
    make_batch, make_annotators, data_lead, client
):
    batch = make_batch("j", ["a", "b", "c"])
    source = create_round(name="src", kind="alignment", generation_batch=batch, gold_rate=0)
    tasks = list(source.tasks.order_by("pk"))
    for task, value, confidence, votes in (
        (tasks[0], True, 1.0, 3),
        (tasks[1], False, 1.0, 2),
        (tasks[2], True, 0.67, 3),  # split vote: not gold
    ):
        Judgement.objects.create(
            task=task, value={"aligned": value}, confidence=confidence, n_ratings=votes
        )
    client.force_login(data_lead)
    response = client.post(
        reverse("admin:curation_annotationround_changelist"),
        {"action": "make_gold", "_selected_action": [source.pk]},
    )
    assert response.status_code == 302
    items = GoldItem.objects.order_by("pk")
    assert [(g.source_task_id, g.answer) for g in items] == [
        (tasks[0].pk, {"aligned": True}),
        (tasks[1].pk, {"aligned": False}),
    ]
    assert add_gold_from_round(source) == []  # once only
    # A round made afterwards draws them.
    nxt = create_round(
        name="next", kind="alignment", generation_batch=make_batch("k", ["d"]), gold_rate=1.0
    )
    assert nxt.tasks.filter(is_gold=True).count() == 1
