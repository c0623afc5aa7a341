"""Against a real Label Studio: configs, idempotent pushes, annotators, webhooks and reconcile.

Set LABELSTUDIO_WRITE_FIXTURES=1 to (re)write the captured webhook payloads to
fixtures/labelstudio/, which test_parsing.py replays without a server.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import replace

import pytest

from curation.labelstudio import configs, server, tokens
from curation.labelstudio.accounts import LabelStudioAccounts
from curation.labelstudio.client import LabelStudioClient
from curation.labelstudio.parsing import (
    AnnotationEvent,
    AnnotationsDeleted,
    TasksDeleted,
    parse_webhook,
)
from curation.labelstudio.receiver import Received, WebhookReceiver

from .conftest import ROOT, SECRET_HEADER

pytestmark = pytest.mark.labelstudio
FIXTURES = ROOT / "fixtures" / "labelstudio"


def _title(stem: str) -> str:
    return f"{stem} {secrets.token_hex(3)}"


def _save_fixture(name: str, item: Received) -> None:
    if os.environ.get("LABELSTUDIO_WRITE_FIXTURES") == "1":
        FIXTURES.mkdir(parents=True, exist_ok=True)
        payload = json.loads(item.body)
        (FIXTURES / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _of(receiver: WebhookReceiver, action: str) -> list[Received]:
    return [r for r in receiver.received if json.loads(r.body).get("action") == action]


def _alignment_tasks(n: int, round_id: int = 7) -> list[dict]:
    return [
        {
            "data": {
                "task_key": f"r{round_id}-g{i}",
                "generation_id": 1000 + i,
                "round_id": round_id,
                "image": f"http://127.0.0.1:9/media/{i}.png",
                "prompt": f"a sticker of a cat number {i}",
            },
            "meta": {"gold": i == 0},
        }
        for i in range(n)
    ]


def _choice(name: str, value: str | list[str], to_name: str = configs.IMAGE) -> dict:
    values = value if isinstance(value, list) else [value]
    return {"from_name": name, "to_name": to_name, "type": "choices", "value": {"choices": values}}


def _rating(name: str, value: int) -> dict:
    return {
        "from_name": name,
        "to_name": configs.IMAGE,
        "type": "rating",
        "value": {"rating": value},
    }


def test_server_status_and_start_are_idempotent(ls_server: server.ServerHandle) -> None:
    state = server.status(ROOT, run_dir=ls_server.run_dir)
    assert state.running and state.healthy and state.pid == ls_server.pid
    again = server.start(
        ROOT,
        ls_server.port,
        ls_server.data_dir,
        password=ls_server.password,
        run_dir=ls_server.run_dir,
    )
    assert again.pid == ls_server.pid  # no second server was launched
    assert again.token == ls_server.token  # the provisioned token is kept in the state file


@pytest.mark.parametrize("kind", ["alignment", "style", "pairwise"])
def test_each_config_is_accepted_and_projects_are_found_by_title(
    ls_client: LabelStudioClient, kind: str
) -> None:
    title = _title(kind)
    project_id = ls_client.ensure_project(title, configs.config_for(kind), maximum_annotations=3)
    assert ls_client.ensure_project(title, configs.config_for(kind), maximum_annotations=3) == (
        project_id
    )
    assert ls_client.project_data_keys(project_id) == set(configs.DATA_KEYS[kind])
    assert ls_client.sdk.projects.get(project_id).maximum_annotations == 3


def test_push_twice_creates_nothing_new_and_skips_bad_items(ls_client: LabelStudioClient) -> None:
    project_id = ls_client.ensure_project(_title("push"), configs.alignment_config())
    tasks = _alignment_tasks(30)
    tasks.insert(5, {"data": {"task_key": "no-image", "prompt": "x"}})
    tasks.insert(9, {"data": {"image": "http://x/1.png", "prompt": "no key"}})

    first = ls_client.push_tasks(project_id, tasks, batch_size=7)
    assert first.created == 30 and first.skipped_existing == 0
    assert len(first.errors) == 2
    assert "tasks[5]" in first.errors[0] and "image" in first.errors[0]
    assert "tasks[9]" in first.errors[1] and "task_key" in first.errors[1]

    # A push whose ids were never stored (interrupted) resumes by the key in task data.
    second = ls_client.push_tasks(project_id, tasks, batch_size=7)
    assert second.created == 0 and second.adopted == 30
    assert second.task_ids == first.task_ids
    stored = ls_client.existing_task_keys(project_id)
    assert stored == first.task_ids and len(stored) == 30
    task = ls_client.sdk.tasks.get(str(first.task_ids["r7-g3"]))
    assert task.data["generation_id"] == 1003 and task.data["round_id"] == 7

    # Someone edits task data in Label Studio (task_key of g3 now says g4) and deletes g5:
    # with the stored ids nothing moves, and only g5 is imported again.
    ls_client.sdk.tasks.update(
        str(first.task_ids["r7-g3"]), data={**task.data, "task_key": "r7-g4"}
    )
    ls_client.sdk.tasks.delete(str(first.task_ids["r7-g5"]))
    third = ls_client.push_tasks(project_id, tasks, batch_size=7, mapped=first.task_ids)
    assert third.created == 1 and third.skipped_existing == 29 and third.adopted == 0
    assert third.replaced == {"r7-g5": first.task_ids["r7-g5"]}
    assert {k: v for k, v in third.task_ids.items() if k != "r7-g5"} == {
        k: v for k, v in first.task_ids.items() if k != "r7-g5"
    }
    assert third.task_ids["r7-g5"] != first.task_ids["r7-g5"]


def test_annotators_webhooks_edits_deletions_and_reconcile(
    ls_client: LabelStudioClient, receiver: WebhookReceiver, ls_server: server.ServerHandle
) -> None:
    project_id = ls_client.ensure_project(
        _title("alignment round"), configs.alignment_config(), maximum_annotations=3
    )
    pushed = ls_client.push_tasks(project_id, _alignment_tasks(3)).task_ids
    hook_id = ls_client.ensure_webhook(
        project_id, receiver.url, secret_header=SECRET_HEADER, secret=receiver.secret
    )
    assert (
        ls_client.ensure_webhook(
            project_id, receiver.url, secret_header=SECRET_HEADER, secret=receiver.secret
        )
        == hook_id
    )
    accounts = LabelStudioAccounts(ls_server.url, ls_server.token)
    alice = accounts.ensure_annotator(f"alice-{project_id}@example.com", "alice-pass-123")
    bob = accounts.ensure_annotator(f"bob-{project_id}@example.com", "bob-pass-1234")
    assert alice.token and bob.token and alice.user_id != bob.user_id
    # Logging in again issues a new personal access token and revokes the one before.
    renewed = accounts.ensure_annotator(alice.email, "alice-pass-123").token
    assert renewed and renewed != alice.token
    assert not tokens.token_works(ls_server.url, alice.token)
    alice = replace(alice, token=renewed)
    assert accounts.ensure_annotator(alice.email, "not-her-password").token is None
    as_alice = LabelStudioClient(ls_server.url, alice.token)
    as_bob = LabelStudioClient(ls_server.url, bob.token)

    baseline = ls_client.pull(project_id, None)
    assert baseline.annotations == [] and set(baseline.tasks) == set(pushed.values())
    watermark = baseline.watermark
    assert watermark is not None

    g0, g2 = pushed["r7-g0"], pushed["r7-g2"]
    a1 = as_alice.sdk.annotations.create(
        id=g0,
        result=[_choice(configs.ALIGNED, "yes"), _rating(configs.ALIGNMENT_RATING, 4)],
        lead_time=2.5,
    )
    b1 = as_bob.sdk.annotations.create(
        id=g0,
        result=[_choice(configs.ALIGNED, "no"), _choice(configs.ISSUES, ["wrong count", "other"])],
    )
    as_alice.sdk.annotations.create(id=g2, result=[_choice(configs.ALIGNED, "yes")])
    assert receiver.wait_for(lambda r: len(r) >= 3)
    created = _of(receiver, "ANNOTATION_CREATED")
    assert len(created) == 3 and all(r.accepted for r in created)
    assert created[0].headers[SECRET_HEADER] == receiver.secret
    _save_fixture("annotation_created", created[0])
    _save_fixture("annotation_created_with_issues", created[1])

    event = parse_webhook(created[0].body)
    assert isinstance(event, AnnotationEvent) and event.project_id == project_id
    (record,) = event.annotations
    assert record.annotation_id == a1.id and record.task_id == g0
    assert record.completed_by == alice.user_id
    assert record.answer.aligned is True and record.answer.alignment_rating == 4
    assert record.task_key == "r7-g0" and record.task_data["generation_id"] == 1000
    bob_event = parse_webhook(created[1].body)
    assert isinstance(bob_event, AnnotationEvent)
    assert bob_event.annotations[0].answer.issues == ("wrong count", "other")

    # Alice changes her mind, Bob withdraws his rating, the data lead drops task g2.
    as_alice.sdk.annotations.update(id=a1.id, result=[_choice(configs.ALIGNED, "no")])
    as_bob.sdk.annotations.delete(id=b1.id)
    ls_client.sdk.tasks.delete(str(g2))
    assert receiver.wait_for(lambda r: len(r) >= 6)

    (updated,) = _of(receiver, "ANNOTATION_UPDATED")
    _save_fixture("annotation_updated", updated)
    update_event = parse_webhook(updated.body)
    assert isinstance(update_event, AnnotationEvent)
    assert update_event.annotations[0].answer.aligned is False
    (deleted,) = _of(receiver, "ANNOTATIONS_DELETED")
    _save_fixture("annotations_deleted", deleted)
    assert parse_webhook(deleted.body) == AnnotationsDeleted(
        "ANNOTATIONS_DELETED", project_id, (b1.id,)
    )
    (tasks_deleted,) = _of(receiver, "TASKS_DELETED")
    _save_fixture("tasks_deleted", tasks_deleted)
    assert parse_webhook(tasks_deleted.body) == TasksDeleted("TASKS_DELETED", project_id, (g2,))

    # The pull reads changed tasks whole: g0 holds only a1 now (b1's absence is its deletion),
    # g2 is missing altogether; g1 (no annotations, maybe inside the 5 s overlap) holds none.
    g1 = pushed["r7-g1"]
    known = {g0: 2, g1: 0, g2: 1}
    pulled = ls_client.pull(project_id, watermark, known_counts=known)
    assert set(pulled.tasks) - {g1} == {g0} and pulled.missing_task_ids == [g2]
    assert g1 not in pulled.tasks or pulled.tasks[g1].annotations == []
    (current,) = pulled.tasks[g0].annotations
    assert current.annotation_id == a1.id and pulled.tasks[g0].data["task_key"] == "r7-g0"
    assert current.answer.aligned is False and current.answer.alignment_rating is None
    assert current.updated_at > current.created_at
    assert pulled.watermark is not None and pulled.watermark > watermark
    # A hint read of named tasks: the same record, the deleted task reported missing.
    hinted = ls_client.read_tasks(project_id, [g0, g2])
    assert set(hinted.tasks) == {g0} and hinted.missing_task_ids == [g2]
    assert hinted.tasks[g0].annotations[0].raw == current.raw


def test_style_and_pairwise_annotations_parse_from_real_payloads(
    ls_client: LabelStudioClient, receiver: WebhookReceiver
) -> None:
    style = ls_client.ensure_project(_title("style"), configs.style_config())
    pair = ls_client.ensure_project(_title("pairwise"), configs.pairwise_config())
    for project_id in (style, pair):
        ls_client.ensure_webhook(
            project_id, receiver.url, secret_header=SECRET_HEADER, secret=receiver.secret
        )
    style_ids = ls_client.push_tasks(
        style,
        [
            {
                "data": {
                    "task_key": "s1",
                    "generation_id": 5,
                    "image": "http://127.0.0.1:9/g5.png",
                    "prompt": "a corgi astronaut",
                    "exemplars": ["http://127.0.0.1:9/e1.png", "http://127.0.0.1:9/e2.png"],
                }
            }
        ],
    ).task_ids
    pair_ids = ls_client.push_tasks(
        pair,
        [
            {
                "data": {
                    "task_key": "p1",
                    "prompt": "a corgi astronaut",
                    "seed": 11,
                    "image_a": "http://127.0.0.1:9/ckpt1.png",
                    "image_b": "http://127.0.0.1:9/ckpt2.png",
                    "checkpoint_a": 1,
                    "checkpoint_b": 2,
                }
            }
        ],
    ).task_ids
    ls_client.sdk.annotations.create(
        id=style_ids["s1"],
        result=[_choice(configs.STYLE_PASS, "pass"), _rating(configs.STYLE_RATING, 5)],
    )
    ls_client.sdk.annotations.create(
        id=pair_ids["p1"],
        result=[
            {
                "from_name": configs.PAIRWISE,
                "to_name": configs.LEFT,
                "type": "pairwise",
                "value": {"selected": "right"},
            }
        ],
    )
    assert receiver.wait_for(lambda r: len(r) >= 2)
    style_hook, pair_hook = _of(receiver, "ANNOTATION_CREATED")
    _save_fixture("style_annotation_created", style_hook)
    _save_fixture("pairwise_annotation_created", pair_hook)
    style_event, pair_event = parse_webhook(style_hook.body), parse_webhook(pair_hook.body)
    assert isinstance(style_event, AnnotationEvent) and isinstance(pair_event, AnnotationEvent)
    assert style_event.annotations[0].answer.style_pass is True
    assert style_event.annotations[0].answer.style_rating == 5
    assert pair_event.annotations[0].answer.preferred == "right"
    assert pair_event.annotations[0].task_data["checkpoint_b"] == 2


def test_ssrf_protection_refuses_webhooks_to_anywhere_but_the_platform(
    ls_client: LabelStudioClient, receiver: WebhookReceiver
) -> None:
    from label_studio_sdk.core.api_error import ApiError

    project_id = ls_client.ensure_project(_title("ssrf"), configs.alignment_config())
    # The platform's address is let through (the receiver listens on 127.0.0.1) ...
    assert ls_client.ensure_webhook(
        project_id, receiver.url, secret_header=SECRET_HEADER, secret=receiver.secret
    )
    # ... cloud metadata, private networks and the rest of loopback are not.
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://127.0.0.2/"):
        with pytest.raises(ApiError) as refused:
            ls_client.sdk.webhooks.create(
                url=url, project=project_id, actions=["ANNOTATION_CREATED"]
            )
        # Label Studio's SsrfBlockedUrlError (403), naming the reserved block.
        assert refused.value.status_code == 403, url
        assert "reserved network" in str(refused.value.body) or "not allowed" in str(
            refused.value.body
        ), refused.value.body
