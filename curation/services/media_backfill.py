"""Strip metadata from images stored before ingest began to (`manage.py strip_media_metadata`).

Ingest now stores what annotators are served without EXIF (GPS included), XMP, IPTC, comments or
text chunks, and keeps the file as supplied apart (`Image.original_key`). Images ingested before
that were stored as supplied, metadata and all. For each image with no `original_key`, this reads
the stored bytes and strips them byte-wise (`curation.ingestion.metadata`, pixels untouched); when
anything was removed:

- the stripped bytes are stored under their own content key and become `storage_key`;
- the old key becomes `original_key` when its bytes are the file as supplied (their sha256 is the
  image's), so a version that asks for original bytes still gets them and no copy is made; bytes
  that were re-encoded by an older ingest are not an original, and `original_key` stays blank;
- nothing is deleted: frozen manifests written before name the old key and keep working;
- every open round that shows a changed image (task, A/B generation or style exemplar) has its
  media links revoked and a `labelstudio.refresh_media` job queued, because the links already in
  Label Studio name the old key and would go on serving the unstripped bytes.

Idempotent: an image already stripped, or with nothing to strip, is left as it is; a second run
changes nothing. Frozen versions keep the keys they were frozen with; re-curating a round after
the backfill names the new keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q

from curation.ingestion.metadata import strip_metadata
from curation.models import AnnotationRound, Image
from curation.services.round_media import OPEN_STATES, reissue_media_links
from curation.services.storage import read_bytes, store_bytes

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


@dataclass
class BackfillReport:
    examined: int = 0
    stripped: int = 0
    originals_kept: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    rounds_reissued: list[int] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would strip" if self.dry_run else "stripped"
        return (
            f"{self.examined} images examined: {verb} {self.stripped} "
            f"({self.originals_kept} keep their file as supplied), {self.unchanged} had nothing "
            f"to strip, {len(self.errors)} could not be read; media links re-issued for "
            f"{len(self.rounds_reissued)} open rounds"
        )


def _format_of(key: str) -> str | None:
    dot = key.rfind(".")
    return _FORMATS.get(key[dot:].lower()) if dot >= 0 else None


def strip_stored_metadata(
    *, batch_size: int = 500, dry_run: bool = False, log: Callable[[str], Any] | None = None
) -> BackfillReport:
    """Strip metadata from every stored image that still carries it; see the module doc."""
    say = log or (lambda line: None)
    report = BackfillReport(dry_run=dry_run)
    changed: list[int] = []
    pending = Image.objects.filter(original_key="").exclude(storage_key="").order_by("pk")
    last = 0
    while True:
        chunk = list(
            pending.filter(pk__gt=last).values_list("pk", "sha256", "storage_key")[:batch_size]
        )
        if not chunk:
            break
        last = chunk[-1][0]
        for pk, sha256, key in chunk:
            report.examined += 1
            fmt = _format_of(key)
            if fmt is None:
                report.unchanged += 1
                continue
            try:
                data = read_bytes(key)
            except OSError as exc:
                report.errors.append(f"image {pk} ({key}): {exc}")
                continue
            stripped = strip_metadata(data, fmt)
            if stripped is data:
                report.unchanged += 1
                continue
            is_original = hashlib.sha256(data).hexdigest() == sha256
            if not dry_run:
                new_key = store_bytes(
                    stripped, key[key.rfind(".") :], sha256=hashlib.sha256(stripped).hexdigest()
                )
                # Conditional on the key read: an image re-stored meanwhile is left to its writer.
                if not Image.objects.filter(pk=pk, storage_key=key, original_key="").update(
                    storage_key=new_key, original_key=key if is_original else ""
                ):
                    report.unchanged += 1
                    continue
                changed.append(pk)
            report.stripped += 1
            report.originals_kept += int(is_original)
        say(f"{report.examined} images examined, {report.stripped} stripped so far")
    if changed:
        report.rounds_reissued = _reissue_links(changed)
    return report


def _reissue_links(image_ids: list[int]) -> list[int]:
    shown = (
        Q(tasks__image_id__in=image_ids)
        | Q(tasks__generation__image_id__in=image_ids)
        | Q(tasks__other_generation__image_id__in=image_ids)
        | Q(style_exemplars__in=image_ids)
    )
    ids = sorted(
        set(
            AnnotationRound.objects.filter(shown, state__in=OPEN_STATES).values_list(
                "pk", flat=True
            )
        )
    )
    with transaction.atomic():
        for round_ in AnnotationRound.objects.filter(pk__in=ids):
            reissue_media_links(round_)
    return ids
