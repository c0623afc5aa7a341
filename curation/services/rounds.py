"""Annotation rounds: create them (with gold tasks mixed in), push them to Label Studio, close them.

A round is one Label Studio project. Its tasks are LabelTask rows created here in the order
annotators will see them; pushing sends the ones Label Studio lacks (found by our `task_key`), so a
push can be repeated or resumed after any crash without creating duplicates.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.urls import reverse

from curation.api.webhooks import SECRET_HEADER
from curation.labelstudio import configs
from curation.labelstudio.client import TASK_KEY, LabelStudioClient
from curation.media import round_url
from curation.models import AnnotationRound, Image, LabelTask
from curation.services.annotators import annotator_users, labelstudio_client

Kind = AnnotationRound.Kind
State = AnnotationRound.State

# What a gold answer may say, per round kind (compared with the annotation's parsed fields).
GOLD_KEYS = {
    Kind.ALIGNMENT: {"aligned": bool, "rating": int},
    Kind.STYLE: {"passed": bool, "rating": int},
    Kind.PAIRWISE: {"preferred": str},
}


@dataclass(frozen=True)
class GoldItem:
    """A task with a known answer, e.g. {"aligned": True} or {"passed": False, "rating": 2}."""

    answer: dict[str, Any]
    image: Image | None = None
    prompt: str = ""
    generation: Any = None
    other_generation: Any = None

    @property
    def identity(self) -> str:
        parts = [
            self.generation.pk if self.generation is not None else None,
            self.other_generation.pk if self.other_generation is not None else None,
            self.image.pk if self.image is not None else None,
            self.prompt,
        ]
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


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


def validate_gold(kind: str, gold: Sequence[GoldItem]) -> None:
    """Raise ValueError naming every bad gold item (index and field) before anything is created."""
    allowed = GOLD_KEYS[Kind(kind)]
    problems: list[str] = []
    for index, item in enumerate(gold):
        where = f"gold[{index}]"
        if not isinstance(item.answer, dict) or not item.answer:
            problems.append(f"{where}.answer: must be a non-empty object")
            continue
        for key, value in item.answer.items():
            expected = allowed.get(key)
            if expected is None:
                problems.append(f"{where}.answer.{key}: not a {kind} answer ({sorted(allowed)})")
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                problems.append(
                    f"{where}.answer.{key}: expected {expected.__name__}, got {value!r}"
                )
        if item.answer.get("preferred") not in (None, configs.LEFT, configs.RIGHT):
            problems.append(f"{where}.answer.preferred: must be 'left' or 'right'")
        if kind == Kind.PAIRWISE:
            if item.generation is None or item.other_generation is None:
                problems.append(
                    f"{where}: a pairwise gold task needs generation and other_generation"
                )
        elif item.generation is None and item.image is None:
            problems.append(f"{where}: needs a generation or an image")
    if problems:
        raise ValueError("invalid gold set: " + "; ".join(problems))


def gold_from_round(source: AnnotationRound, *, min_confidence: float = 1.0) -> list[GoldItem]:
    """Gold items from an earlier round of the same kind: its gold tasks plus confident verdicts.

    "Confident" defaults to unanimous among at least two counted ratings.
    """
    items: list[GoldItem] = []
    for task in source.tasks.select_related("generation", "other_generation", "image"):
        if task.is_gold:
            answer = dict(task.gold_answer)
        else:
            judgement = getattr(task, "judgement", None)
            if (
                judgement is None
                or judgement.n_ratings < 2
                or judgement.confidence < min_confidence
            ):
                continue
            answer = _answer_from_judgement(source.kind, judgement.value)
            if not answer:
                continue
        items.append(
            GoldItem(
                answer=answer,
                image=task.image,
                prompt=task.prompt,
                generation=task.generation,
                other_generation=task.other_generation,
            )
        )
    return items


def _answer_from_judgement(kind: str, value: dict[str, Any]) -> dict[str, Any]:
    if kind == Kind.ALIGNMENT and isinstance(value.get("aligned"), bool):
        return {"aligned": value["aligned"]}
    if kind == Kind.STYLE and isinstance(value.get("passed"), bool):
        return {"passed": value["passed"]}
    if kind == Kind.PAIRWISE and value.get("preferred") in (configs.LEFT, configs.RIGHT):
        return {"preferred": value["preferred"]}
    return {}


def _mix_gold(
    regular: list[_Planned], gold: Sequence[GoldItem], rate: float, seed: str
) -> list[_Planned]:
    """Spread gold tasks evenly (with jitter) through the regular ones; deterministic per round."""
    if not regular or not gold or rate <= 0:
        return regular
    count = min(len(gold), max(1, round(rate * len(regular))))
    rng = random.Random(seed)
    chosen = rng.sample(list(gold), count)
    stride = len(regular) / count
    positions = sorted(int(i * stride + rng.random() * stride) for i in range(count))
    planned = list(regular)
    for offset, (position, item) in enumerate(zip(positions, chosen, strict=True)):
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


@transaction.atomic
def _create(
    *,
    name: str,
    kind: str,
    planned: list[_Planned],
    gold: Sequence[GoldItem],
    overlap: int,
    gold_rate: float,
    gold_accuracy_threshold: float,
    style_exemplars: Iterable[Image],
    curation_rules: dict[str, Any] | None,
    user: Any,
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
    validate_gold(kind, gold)
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
    )
    exemplars = list(style_exemplars)
    if exemplars:
        round_.style_exemplars.set(exemplars)
    round_.members.set(list(annotator_users()) if members is None else list(members))
    ordered = _mix_gold(planned, gold, gold_rate, seed=f"round-{round_.pk}")
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
    gold: Sequence[GoldItem] = (),
    gold_rate: float = 0.1,
    gold_accuracy_threshold: float = 0.7,
    style_exemplars: Iterable[Image] = (),
    curation_rules: dict[str, Any] | None = None,
    members: Iterable[Any] | None = None,
    user: Any = None,
) -> AnnotationRound:
    """A round over a GenerationBatch's generations or any images, with its tasks and gold.

    For plain images the prompt shown is the image's caption. A pairwise round compares
    `generation_batch` with `other_generation_batch`. `members` are the annotators who see the
    round (default: every current annotator).
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
        members=members,
        generation_batch=generation_batch,
    )


def create_pairwise_round(
    batch_a: Any,
    batch_b: Any,
    *,
    name: str | None = None,
    overlap: int = 3,
    gold: Sequence[GoldItem] = (),
    gold_rate: float = 0.0,
    gold_accuracy_threshold: float = 0.7,
    curation_rules: dict[str, Any] | None = None,
    members: Iterable[Any] | None = None,
    user: Any = None,
) -> AnnotationRound:
    """A/B tasks pairing the two batches' generations of the same prompt and seed.

    Which batch shows on the left is decided per task (deterministically), so position bias does
    not favour one checkpoint; the task data records which generation is on which side.
    """
    if batch_a.pk == batch_b.pk:
        raise ValueError("batch_b: must differ from batch_a")
    others = {(g.prompt_id, g.seed): g for g in batch_b.generations.select_related("image")}
    planned: list[_Planned] = []
    for generation in batch_a.generations.select_related("image").order_by("pk"):
        other = others.get((generation.prompt_id, generation.seed))
        if other is None:
            continue
        flip = hashlib.sha256(f"{generation.pk}:{other.pk}".encode()).digest()[0] % 2 == 1
        left, right = (other, generation) if flip else (generation, other)
        planned.append(
            _Planned(
                key=_task_key("pair", left.pk, right.pk),
                prompt=generation.prompt_text,
                generation=left,
                other_generation=right,
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
        members=members,
        generation_batch=batch_a,
        other_generation_batch=batch_b,
    )


# -- push ---------------------------------------------------------------------------------------


def webhook_url() -> str:
    return settings.PLATFORM_PUBLIC_URL.rstrip("/") + reverse("labelstudio-webhook")


def task_payload(task: LabelTask, exemplar_urls: list[str]) -> dict[str, Any]:
    """Label Studio task JSON: our ids plus what the labeling config shows.

    Nothing says whether a task is gold: annotators can read task data in Label Studio.
    """
    round_ = task.round
    data: dict[str, Any] = {TASK_KEY: task.key, "round_id": round_.pk, "prompt": task.prompt}
    if round_.kind == Kind.PAIRWISE:
        left, right = task.generation, task.other_generation
        if left is None or right is None:
            raise ValueError(f"task {task.key}: a pairwise task needs two generations")
        data.update(
            generation_a=left.pk,
            generation_b=right.pk,
            batch_a=left.batch_id,
            batch_b=right.batch_id,
            seed=left.seed,
            image_a=_image_url(left.image, f"task {task.key} generation {left.pk}", round_),
            image_b=_image_url(right.image, f"task {task.key} generation {right.pk}", round_),
        )
        return {"data": data}
    image = task.generation.image if task.generation is not None else task.image
    data["image"] = _image_url(image, f"task {task.key}", round_)
    data["generation_id"] = task.generation_id
    data["image_id"] = image.pk if image is not None else None
    if round_.kind == Kind.STYLE:
        data["exemplars"] = exemplar_urls
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
    project_id = client.ensure_project(
        round_.labelstudio_title,
        configs.config_for(round_.kind),
        maximum_annotations=round_.overlap,
        description=f"Platform round {round_.pk} ({round_.kind}); do not edit tasks here.",
    )
    if round_.labelstudio_project_id != project_id:
        round_.labelstudio_project_id = project_id
        round_.save(update_fields=["labelstudio_project_id", "updated_at"])
    say(f"project {project_id} ({round_.labelstudio_title})")

    exemplar_urls = [
        round_url(image.storage_key, round_)
        for image in round_.style_exemplars.usable().order_by("pk")
    ]
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
    result = client.push_tasks(project_id, payloads, batch_size=batch_size)
    errors.extend(result.errors)
    changed = []
    for task in tasks:
        task_id = result.task_ids.get(task.key)
        if task_id is not None and task.labelstudio_task_id != task_id:
            task.labelstudio_task_id = task_id
            changed.append(task)
    LabelTask.objects.bulk_update(changed, ["labelstudio_task_id"], batch_size=1000)
    say(f"{result.created} tasks created, {result.skipped_existing} already there")
    for line in errors[:50]:
        say(f"skipped: {line}")

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
        "errors": errors[:200],
        "error_count": len(errors),
        "webhook_id": hook_id,
    }


def set_archived(round_: AnnotationRound, archived: bool) -> AnnotationRound:
    """Hide a round from lists (or show it again); nothing of it is deleted."""
    AnnotationRound.objects.filter(pk=round_.pk).update(archived=archived)
    round_.refresh_from_db()
    return round_


def close_round(round_: AnnotationRound) -> AnnotationRound:
    """Stop treating the round as active (scheduled reconciles skip it); annotations stay."""
    if round_.state not in (State.PUSHED, State.ANNOTATING):
        raise ValueError(
            f"round {round_.pk} is {round_.state}; only pushed or annotating rounds close"
        )
    # Its media links end with it (curation.media checks the state and the generation).
    AnnotationRound.objects.filter(pk=round_.pk).update(
        state=State.CLOSED, media_generation=F("media_generation") + 1
    )
    round_.refresh_from_db()
    return round_
