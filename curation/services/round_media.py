"""Revoke a round's media links, and hand Label Studio fresh ones where the round goes on.

Links in a round's tasks carry the round's `media_generation` (curation.media.round_url).
Removing an annotator from the round raises it, so every link that annotator may have copied
stops working at once; a `labelstudio.refresh_media` job then rewrites the image URLs of the
round's tasks in Label Studio, so the remaining annotators see images again. Closing a round
raises it too: its links end with it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from curation.labelstudio.client import LabelStudioClient
from curation.media import round_url
from curation.models import AnnotationRound
from curation.services.annotators import labelstudio_client
from curation.services.jobs import enqueue_job
from curation.services.rounds.push import task_payload

OPEN_STATES = (AnnotationRound.State.PUSHED, AnnotationRound.State.ANNOTATING)


def revoke_media_links(round_: AnnotationRound) -> int:
    """End every media link issued for the round so far; returns the new generation."""
    AnnotationRound.objects.filter(pk=round_.pk).update(media_generation=F("media_generation") + 1)
    round_.refresh_from_db(fields=["media_generation"])
    return round_.media_generation


def reissue_media_links(round_: AnnotationRound) -> None:
    """End the round's links now; once committed, a job gives Label Studio fresh ones."""
    revoke_media_links(round_)
    if round_.labelstudio_project_id is not None:
        transaction.on_commit(lambda: _enqueue_refresh(round_))


def revoke_rounds_of(user_ids: list[int]) -> int:
    """A user stopped being an annotator: end the links of every open round they were in."""
    rounds = AnnotationRound.objects.filter(members__in=user_ids, state__in=OPEN_STATES)
    ids = list(rounds.distinct().values_list("pk", flat=True))
    for round_ in AnnotationRound.objects.filter(pk__in=ids):
        reissue_media_links(round_)
    return len(ids)


def on_members_changed(instance: Any, action: str, reverse: bool, pk_set: Any, **_: Any) -> None:
    """m2m_changed receiver for AnnotationRound.members: a removal revokes the round's links."""
    if action == "post_remove":
        ids = list(pk_set or []) if reverse else [instance.pk]
    elif action == "pre_clear":  # the set is still there to read
        ids = (
            list(instance.annotation_rounds.values_list("pk", flat=True))
            if reverse
            else [instance.pk]
        )
    else:
        return
    for round_ in AnnotationRound.objects.filter(pk__in=ids):
        revoke_media_links(round_)
        if round_.state in OPEN_STATES and round_.labelstudio_project_id is not None:
            transaction.on_commit(lambda r=round_: _enqueue_refresh(r))


def _enqueue_refresh(round_: AnnotationRound) -> None:
    enqueue_job("labelstudio.refresh_media", params={"round_id": round_.pk}, target=round_)


def refresh_media_links(
    round_: AnnotationRound, *, client: LabelStudioClient | None = None, log: Any = None
) -> dict[str, Any]:
    """Rewrite the image URLs of the round's pushed tasks with links of its current generation."""
    say = log or (lambda line: None)
    round_ = AnnotationRound.objects.get(pk=round_.pk)
    if round_.state not in OPEN_STATES:
        say(f"round {round_.pk} is {round_.state}: its links stay revoked")
        return {"updated": 0, "errors": []}
    client = client or labelstudio_client()
    exemplars = [round_url(i.storage_key, round_) for i in round_.style_exemplars.usable()]
    tasks = round_.tasks.filter(labelstudio_task_id__isnull=False).select_related(
        "round", "image", "generation__image", "other_generation__image"
    )
    updated, errors = 0, []
    for task in tasks.order_by("pk").iterator(chunk_size=500):
        try:
            data = task_payload(task, exemplars)["data"]
        except ValueError as exc:
            errors.append(str(exc))
            continue
        client.update_task_data(task.labelstudio_task_id, data)
        updated += 1
    say(f"{updated} tasks given links of media generation {round_.media_generation}")
    for line in errors[:50]:
        say(f"skipped: {line}")
    return {"updated": updated, "errors": errors, "generation": round_.media_generation}
