"""Annotation rounds: create them (with gold tasks mixed in), push them to Label Studio, close them.

A round is one Label Studio project. Its tasks are LabelTask rows created here in the order
annotators will see them; pushing sends the ones Label Studio lacks (found by our `task_key`), so a
push can be repeated or resumed after any crash without creating duplicates.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
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
    GoldItem,
    Image,
    LabelTask,
    RoundNotice,
)
from curation.services.annotation_store import apply_pull, mark_round_lost
from curation.services.annotators import annotator_users, labelstudio_client
from curation.services.gold import gold_pool, pick_gold, validate_gold

Kind = AnnotationRound.Kind
State = AnnotationRound.State

LABEL_STUDIO_TITLE_MAX = 50


def _task_key(*parts: Any) -> str:
    """Opaque and stable: annotators can read task data, so a key must not say "gold"."""
    return "t" + hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass
class _Planned:
    key: str
    prompt: str
    generation: Any = None
    other_generation: Any = None
    image: Image | None = None
    is_gold: bool = False
    gold_answer: dict[str, Any] = field(default_factory=dict)


def _mix_gold(
    regular: list[_Planned], gold: Sequence[GoldItem], rate: float, seed: str
) -> list[_Planned]:
    """Spread gold tasks evenly (with jitter) through the regular ones; deterministic per round."""
    planned = list(regular)
    for offset, (position, item) in enumerate(pick_gold(gold, len(regular), rate, seed)):
        planned.insert(
            position + offset,
            _Planned(
                key=_task_key("gold", item.identity),
                prompt=item.prompt
                or (item.generation.prompt_text if item.generation is not None else ""),
                generation=item.generation,
                other_generation=item.other_generation,
                image=item.image,
                is_gold=True,
                gold_answer=dict(item.answer),
            ),
        )
    return planned


def _randomise_sides(planned: _Planned) -> None:
    """A/B blinding: a fair coin per task (not derivable from ids) decides which generation is
    on the left; the LabelTask records it, task data never does. Gold answers follow."""
    if secrets.randbelow(2):
        planned.generation, planned.other_generation = (
            planned.other_generation,
            planned.generation,
        )
        side = planned.gold_answer.get("preferred")
        if side in (configs.LEFT, configs.RIGHT):
            planned.gold_answer = {
                **planned.gold_answer,
                "preferred": configs.RIGHT if side == configs.LEFT else configs.LEFT,
            }


@transaction.atomic
def _create(
    *,
    name: str,
    kind: str,
    planned: list[_Planned],
    gold: Sequence[GoldItem] | None,
    overlap: int,
    gold_rate: float,
    gold_accuracy_threshold: float,
    style_exemplars: Iterable[Image],
    curation_rules: dict[str, Any] | None,
    user: Any,
    min_gold_answered: int | None = None,
    gold_confidence: float | None = None,
    members: Iterable[Any] | None = None,
    generation_batch: Any = None,
    other_generation_batch: Any = None,
) -> AnnotationRound:
    if overlap < 1:
        raise ValueError(f"overlap: must be at least 1, got {overlap}")
    if not 0 <= gold_rate <= 1:
        raise ValueError(f"gold_rate: must be between 0 and 1, got {gold_rate}")
    if not planned:
        raise ValueError(f"round {name!r}: nothing to annotate (no generations or images)")
    gold = gold_pool(kind) if gold is None else list(gold)
    validate_gold(kind, gold)
    policy: dict[str, Any] = {}
    if min_gold_answered is not None:
        policy["min_gold_answered"] = min_gold_answered
    if gold_confidence is not None:
        if not 0 < gold_confidence < 1:
            raise ValueError(f"gold_confidence: must be between 0 and 1, got {gold_confidence}")
        policy["gold_confidence"] = gold_confidence
    round_ = AnnotationRound.objects.create(
        name=name,
        kind=kind,
        generation_batch=generation_batch,
        other_generation_batch=other_generation_batch,
        overlap=overlap,
        gold_rate=gold_rate,
        gold_accuracy_threshold=gold_accuracy_threshold,
        curation_rules=dict(curation_rules or {}),
        created_by=user if getattr(user, "pk", None) else None,
        **policy,
    )
    exemplars = list(style_exemplars)
    if exemplars:
        round_.style_exemplars.set(exemplars)
    round_.members.set(list(annotator_users()) if members is None else list(members))
    ordered = _mix_gold(planned, gold, gold_rate, seed=f"round-{round_.pk}")
    if gold_rate > 0 and not gold:
        # Not an error (an automated retrain round must still start), but never silent.
        RoundNotice.objects.create(
            round=round_,
            kind=RoundNotice.Kind.NO_GOLD,
            message=(
                f"gold_rate is {gold_rate} but the {kind} gold pool is empty: this round has no "
                "gold tasks, so gold checks exclude nobody. Mark gold items in the admin."
            ),
        )
    if kind == Kind.PAIRWISE:
        for p in ordered:
            _randomise_sides(p)
    LabelTask.objects.bulk_create(
        LabelTask(
            round=round_,
            key=p.key,
            prompt=p.prompt,
            generation=p.generation,
            other_generation=p.other_generation,
            image=p.image,
            is_gold=p.is_gold,
            gold_answer=p.gold_answer,
        )
        for p in ordered
    )
    return round_


def create_round(
    *,
    name: str,
    kind: str,
    generation_batch: Any = None,
    other_generation_batch: Any = None,
    images: QuerySet | Iterable[Image] | None = None,
    overlap: int = 3,
    gold: Sequence[GoldItem] | None = None,
    gold_rate: float = 0.1,
    gold_accuracy_threshold: float = 0.7,
    style_exemplars: Iterable[Image] = (),
    curation_rules: dict[str, Any] | None = None,
    min_gold_answered: int | None = None,
    gold_confidence: float | None = None,
    members: Iterable[Any] | None = None,
    user: Any = None,
) -> AnnotationRound:
    """A round over a GenerationBatch's generations or any images, with its tasks and gold.

    For plain images the prompt shown is the image's caption. A pairwise round compares
    `generation_batch` with `other_generation_batch`. `members` are the annotators who see the
    round (default: every current annotator). Gold tasks come from `gold` or, by default,
    the kind's gold pool, `gold_rate` of them per regular task; every way of making a round
    (admin, API, retrain rounds) comes here.
    """
    if kind == Kind.PAIRWISE:
        if generation_batch is None or other_generation_batch is None or images is not None:
            raise ValueError("a pairwise round needs generation_batch and other_generation_batch")
        return create_pairwise_round(
            generation_batch,
            other_generation_batch,
            name=name,
            overlap=overlap,
            gold=gold,
            gold_rate=gold_rate,
            gold_accuracy_threshold=gold_accuracy_threshold,
            curation_rules=curation_rules,
            min_gold_answered=min_gold_answered,
            gold_confidence=gold_confidence,
            members=members,
            user=user,
        )
    if kind not in (Kind.ALIGNMENT, Kind.STYLE):
        raise ValueError(f"kind: {kind!r} is not 'alignment', 'style' or 'pairwise'")
    if other_generation_batch is not None:
        raise ValueError("other_generation_batch: only pairwise rounds compare two batches")
    if (generation_batch is None) == (images is None):
        raise ValueError("give exactly one of generation_batch or images")
    if generation_batch is not None:
        planned = [
            _Planned(
                key=_task_key("generation", g.pk), prompt=g.prompt_text, generation=g, image=g.image
            )
            for g in generation_batch.generations.select_related("image").order_by("pk")
        ]
    else:
        planned = [
            _Planned(key=_task_key("image", im.pk), prompt=im.caption, image=im) for im in images
        ]
    return _create(
        name=name,
        kind=kind,
        planned=planned,
        gold=gold,
        overlap=overlap,
        gold_rate=gold_rate,
        gold_accuracy_threshold=gold_accuracy_threshold,
        style_exemplars=style_exemplars,
        curation_rules=curation_rules,
        user=user,
        min_gold_answered=min_gold_answered,
        gold_confidence=gold_confidence,
        members=members,
        generation_batch=generation_batch,
    )


def create_pairwise_round(
    batch_a: Any,
    batch_b: Any,
    *,
    name: str | None = None,
    overlap: int = 3,
    gold: Sequence[GoldItem] | None = None,
    gold_rate: float = 0.0,
    gold_accuracy_threshold: float = 0.7,
    curation_rules: dict[str, Any] | None = None,
    min_gold_answered: int | None = None,
    gold_confidence: float | None = None,
    members: Iterable[Any] | None = None,
    user: Any = None,
) -> AnnotationRound:
    """A/B tasks pairing the two batches' generations of the same prompt and seed.

    Which batch shows on the left is decided per task by a fair coin, so position bias does not
    favour one checkpoint; only the platform's LabelTask records which side is which.
    """
    if batch_a.pk == batch_b.pk:
        raise ValueError("batch_b: must differ from batch_a")
    others = {(g.prompt_id, g.seed): g for g in batch_b.generations.select_related("image")}
    planned: list[_Planned] = []
    for generation in batch_a.generations.select_related("image").order_by("pk"):
        other = others.get((generation.prompt_id, generation.seed))
        if other is None:
            continue
        planned.append(
            _Planned(
                key=_task_key("pair", *sorted((generation.pk, other.pk))),
                prompt=generation.prompt_text,
                generation=generation,
                other_generation=other,
            )
        )
    if not planned:
        raise ValueError(
            f"batches {batch_a.pk} and {batch_b.pk} share no (prompt, seed): nothing to compare"
        )
    return _create(
        name=name or f"{batch_a} vs {batch_b}",
        kind=Kind.PAIRWISE,
        planned=planned,
        gold=gold,
        overlap=overlap,
        gold_rate=gold_rate,
        gold_accuracy_threshold=gold_accuracy_threshold,
        style_exemplars=(),
        curation_rules=curation_rules,
        user=user,
        min_gold_answered=min_gold_answered,
        gold_confidence=gold_confidence,
        members=members,
        generation_batch=batch_a,
        other_generation_batch=batch_b,
    )


# -- push ---------------------------------------------------------------------------------------


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


def set_archived(round_: AnnotationRound, archived: bool) -> AnnotationRound:
    """Hide a round from lists (or show it again); nothing of it is deleted."""
    AnnotationRound.objects.filter(pk=round_.pk).update(archived=archived)
    round_.refresh_from_db()
    return round_
