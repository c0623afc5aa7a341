"""Pushing a round to Label Studio: the project (found by its stored title), the tasks it lacks
(found by key), their ids stored back, and the webhook pointed at the platform."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from curation.labelstudio import configs
from curation.labelstudio.client import TASK_KEY, LabelStudioClient
from curation.labelstudio.data_manager import hide_data_columns
from curation.labelstudio.parsing import SECRET_HEADER
from curation.labelstudio.pull import Pull
from curation.media import round_url
from curation.models import (
    AnnotationRound,
    AnnotationVersion,
    Image,
    LabelTask,
    RoundNotice,
)
from curation.services.annotation_store import apply_pull, mark_round_lost
from curation.services.annotators import labelstudio_client

Kind = AnnotationRound.Kind
State = AnnotationRound.State

LABEL_STUDIO_TITLE_MAX = 50


def webhook_url() -> str:
    return settings.PLATFORM_PUBLIC_URL.rstrip("/") + reverse("labelstudio-webhook")


def task_payload(task: LabelTask, exemplar_urls: list[str]) -> dict[str, Any]:
    """Label Studio task JSON: our opaque key plus what the labeling config shows.

    Annotators can read (and edit) task data in Label Studio, so it says nothing the platform
    relies on or that could bias a rating: no gold hint, no generation, batch, checkpoint or
    seed, and for A/B tasks nothing about which side is which (that is on the LabelTask only).
    """
    round_ = task.round
    data: dict[str, Any] = {TASK_KEY: task.key, "round_id": round_.pk, "prompt": task.prompt}
    if round_.kind == Kind.PAIRWISE:
        left, right = task.generation, task.other_generation
        if left is None or right is None:
            raise ValueError(f"task {task.key}: a pairwise task needs two generations")
        data.update(
            image_a=_image_url(left.image, f"task {task.key} left generation", round_),
            image_b=_image_url(right.image, f"task {task.key} right generation", round_),
        )
        return {"data": data}
    image = task.generation.image if task.generation is not None else task.image
    data["image"] = _image_url(image, f"task {task.key}", round_)
    if round_.kind == Kind.STYLE:
        data.update(zip(configs.exemplar_keys(len(exemplar_urls)), exemplar_urls, strict=False))
    return {"data": data}


def _image_url(image: Image | None, where: str, round_: AnnotationRound) -> str:
    if image is None or not image.storage_key:
        raise ValueError(f"{where}: image has no stored file (storage_key is empty)")
    if image.status == Image.Status.QUARANTINED:
        raise ValueError(f"{where}: image {image.sha256[:12]} is quarantined, not pushed")
    return round_url(image.storage_key, round_)


def register_webhook(round_: AnnotationRound, client: LabelStudioClient) -> int | None:
    """Point the project's webhook at the platform; None when no secret is configured.

    Without a secret the receiver refuses every post, so the round relies on reconcile alone.
    """
    secret = settings.LABEL_STUDIO_WEBHOOK_SECRET
    if not secret or round_.labelstudio_project_id is None:
        return None
    return client.ensure_webhook(
        round_.labelstudio_project_id, webhook_url(), secret_header=SECRET_HEADER, secret=secret
    )


def push_round(
    round_: AnnotationRound,
    *,
    client: LabelStudioClient | None = None,
    batch_size: int = 1000,
    log: Any = None,
) -> dict[str, Any]:
    """Create/update the round's project, import missing tasks, store their ids, hook webhooks.

    Safe to repeat: the project is found by its stored title, tasks by key. Tasks whose payload
    cannot be built (an image without a file) are reported and skipped, never fatal.
    """
    say = log or (lambda line: None)
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    if round_.state in (State.CLOSED, State.CURATED):
        raise ValueError(f"round {round_.pk} is {round_.state}; closed rounds are not pushed")
    client = client or labelstudio_client()
    if not round_.labelstudio_title:
        # The random suffix keeps two platform databases (or test runs) sharing one Label Studio
        # from adopting each other's projects.
        # Label Studio refuses project titles over 50 characters (400 Bad Request).
        suffix = f" [r{round_.pk} {secrets.token_hex(3)}]"
        round_.labelstudio_title = round_.name[: LABEL_STUDIO_TITLE_MAX - len(suffix)] + suffix
        round_.save(update_fields=["labelstudio_title", "updated_at"])
    exemplar_urls = [
        round_url(image.storage_key, round_)
        for image in round_.style_exemplars.usable().order_by("pk")
    ][: configs.MAX_EXEMPLARS]
    config = label_config = configs.config_for(round_.kind, exemplars=len(exemplar_urls))
    old_project = round_.labelstudio_project_id
    if old_project is not None and client.project_exists(old_project):
        project_id = old_project
        client.sdk.projects.update(
            project_id, label_config=config, maximum_annotations=round_.overlap
        )
    else:
        project_id = client.ensure_project(
            round_.labelstudio_title,
            config,
            maximum_annotations=round_.overlap,
            description=f"Platform round {round_.pk} ({round_.kind}); do not edit tasks here.",
        )
    if old_project is not None and project_id != old_project:
        lost = mark_round_lost(
            round_,
            f"project {old_project} deleted in Label Studio",
            source=AnnotationVersion.Source.PUSH,
        )
        RoundNotice.objects.create(
            round=round_,
            kind=RoundNotice.Kind.PROJECT_REPLACED,
            message=(
                f"Label Studio project {old_project} was gone; the round was pushed again as "
                f"project {project_id}. {lost} annotations of the old project are kept here as "
                "deleted, with their history."
            ),
            details={"old_project": old_project, "project": project_id, "annotations": lost},
        )
        say(f"project {old_project} is gone from Label Studio: {lost} annotations marked lost")
    if round_.labelstudio_project_id != project_id:
        round_.labelstudio_project_id = project_id
        round_.save(update_fields=["labelstudio_project_id", "updated_at"])
    say(f"project {project_id} ({round_.labelstudio_title})")
    tasks = list(
        round_.tasks.select_related(
            "round", "image", "generation__image", "other_generation__image"
        ).order_by("pk")
    )
    payloads: list[dict[str, Any]] = []
    errors: list[str] = []
    for task in tasks:
        try:
            payloads.append(task_payload(task, exemplar_urls))
        except ValueError as exc:
            errors.append(str(exc))
    mapped = {t.key: t.labelstudio_task_id for t in tasks if t.labelstudio_task_id}
    listed_at = timezone.now()
    result = client.push_tasks(project_id, payloads, batch_size=batch_size, mapped=mapped)
    errors.extend(result.errors)
    if result.replaced:
        # Gone from Label Studio before any read saw it: those annotations went with it.
        apply_pull(
            round_,
            Pull(
                project_id=project_id,
                read_at=listed_at,
                tasks={},
                missing_task_ids=sorted(result.replaced.values()),
            ),
            source=AnnotationVersion.Source.PUSH,
        )
        tasks = list(round_.tasks.order_by("pk"))
    changed = []
    for task in tasks:
        task_id = result.task_ids.get(task.key)
        if task_id is not None and task.labelstudio_task_id != task_id:
            if task.key in result.replaced:
                RoundNotice.objects.create(
                    round=round_,
                    kind=RoundNotice.Kind.TASK_REPUSHED,
                    message=(
                        f"Task {task.key} was gone from Label Studio (task "
                        f"{result.replaced[task.key]}); pushed again as task {task_id}."
                    ),
                    details={"old": result.replaced[task.key], "new": task_id},
                )
            task.labelstudio_task_id = task_id
            changed.append(task)
    LabelTask.objects.bulk_update(changed, ["labelstudio_task_id"], batch_size=1000)
    say(
        f"{result.created} tasks created, {result.skipped_existing} already there"
        + (f", {len(result.replaced)} re-created" if result.replaced else "")
    )
    for line in errors[:50]:
        say(f"skipped: {line}")

    # Annotators see the prompt and the images; the platform's ids stay out of their columns.
    shown = configs.data_keys(label_config)
    internal = {key for payload in payloads for key in payload["data"]} - shown
    hide_data_columns(client.sdk, project_id, internal)

    hook_id = register_webhook(round_, client)
    if hook_id is None:
        say("no LABEL_STUDIO_WEBHOOK_SECRET: no webhook; annotations arrive by reconcile only")
    if round_.state == State.DRAFT:
        AnnotationRound.objects.filter(pk=round_.pk, state=State.DRAFT).update(state=State.PUSHED)
    return {
        "project_id": project_id,
        "tasks": len(tasks),
        "created": result.created,
        "skipped_existing": result.skipped_existing,
        "recreated": len(result.replaced),
        "errors": errors[:200],
        "error_count": len(errors),
        "webhook_id": hook_id,
    }
