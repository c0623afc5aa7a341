"""Quarantine: take images out of every use, with a reason, and put them back explicitly.

A quarantined image is not usable (`Image.objects.usable()`): recipes and search drop it from
their candidates, the review grid hides it, freezing leaves it out, exports and training
manifests withhold it and a Label Studio push refuses it. Nothing is deleted, so releasing it
restores every use.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from curation.models import Image

REASON_MAX = 2000


def quarantine_images(images: QuerySet[Image], *, reason: str, user: Any = None) -> int:
    """Quarantine `images` (near-duplicates included); returns how many changed status.

    Images already quarantined keep their first reason, time and person.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("reason: say why these images are quarantined")
    return images.exclude(status=Image.Status.QUARANTINED).update(
        status=Image.Status.QUARANTINED,
        quarantine_reason=reason[:REASON_MAX],
        quarantined_by=user if getattr(user, "pk", None) else None,
        quarantined_at=timezone.now(),
        updated_at=timezone.now(),
    )


def release_images(images: QuerySet[Image]) -> int:
    """Release quarantined images; returns how many were released.

    An image with stored bytes becomes ok; one without (a near-duplicate, recorded but never
    stored) goes back to being a near-duplicate. Images that are not quarantined are untouched.
    """
    quarantined = images.filter(status=Image.Status.QUARANTINED)
    cleared = {
        "quarantine_reason": "",
        "quarantined_by": None,
        "quarantined_at": None,
        "updated_at": timezone.now(),
    }
    released = quarantined.exclude(storage_key="").update(status=Image.Status.OK, **cleared)
    released += quarantined.filter(storage_key="").update(status=Image.Status.DUPLICATE, **cleared)
    return released
