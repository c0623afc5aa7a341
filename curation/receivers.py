"""Signal receivers: a user who stops being an annotator stops counting at once.

Counting already requires the annotator group *now* (`counted_labelstudio_users`); this marks
the account inactive for the admin to show, and enqueues the sync that switches the Label Studio
account off (Label Studio is another server: never called inside the admin's request).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_save


def connect() -> None:
    User = get_user_model()
    m2m_changed.connect(
        _groups_changed, sender=User.groups.through, dispatch_uid="curation.annotator_groups"
    )
    post_save.connect(_user_saved, sender=User, dispatch_uid="curation.annotator_user_saved")


def _groups_changed(
    instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    if action not in ("post_remove", "post_clear"):
        return
    if not reverse:
        user_ids = [instance.pk]
    elif pk_set:
        user_ids = list(pk_set)
    else:
        return  # group.user_set.clear(): the ids are gone; the next sync catches up
    revoke_if_not_annotator(user_ids)


def _user_saved(instance: Any, created: bool, **kwargs: Any) -> None:
    if not created and not instance.is_active:
        revoke_if_not_annotator([instance.pk])


def revoke_if_not_annotator(user_ids: list[int]) -> int:
    """Mark the accounts of these users inactive when they no longer are annotators; enqueue a
    sync to switch them off in Label Studio. Returns how many were revoked."""
    from curation.models import AnnotatorAccount
    from curation.services.annotators import is_annotator
    from curation.services.jobs import enqueue_job

    revoked_users: list[int] = []
    for account in AnnotatorAccount.objects.filter(
        user_id__in=user_ids, active=True
    ).select_related("user"):
        if is_annotator(account.user):
            continue
        AnnotatorAccount.objects.filter(pk=account.pk).update(active=False)
        revoked_users.append(account.user_id)
    if revoked_users:
        enqueue_job("labelstudio.sync_annotators")
        from curation.services.round_media import revoke_rounds_of

        revoke_rounds_of(revoked_users)  # image links they may have copied end too
    return len(revoked_users)
