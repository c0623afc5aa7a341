"""What a person hands the admin's "start an ingest" page, turned into a path the ingest job reads.

An uploaded archive or manifest is written under INGEST_UPLOAD_DIR (the job reads local paths;
with workers on other machines that folder must be shared). A named folder must lie inside one
of INGEST_ROOTS: the web page never reaches the rest of the server's disk.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings

from curation.models import IngestBatch
from curation.services.ingest import enqueue_ingest

UPLOAD_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".csv", ".parquet")


class IngestRequestError(ValueError):
    """Why the request cannot start an ingest, naming the field."""


def ingest_roots() -> list[Path]:
    return [Path(r).expanduser().resolve() for r in settings.INGEST_ROOTS]


def resolve_root_folder(text: str) -> Path:
    """An absolute path, or one relative to the first root, that lies inside a configured root."""
    roots = ingest_roots()
    if not roots:
        raise IngestRequestError(
            "folder: no INGEST_ROOTS are configured on this server; upload an archive instead"
        )
    text = (text or "").strip()
    if not text:
        raise IngestRequestError("folder: give a folder inside " + ", ".join(map(str, roots)))
    candidate = Path(text).expanduser()
    path = (candidate if candidate.is_absolute() else roots[0] / candidate).resolve()
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise IngestRequestError(
            f"folder: {text} is outside the ingest roots ({', '.join(map(str, roots))})"
        )
    if not path.exists():
        raise IngestRequestError(f"folder: {path} does not exist")
    return path


def save_upload(upload: Any) -> Path:
    """Write an uploaded archive or manifest to its own folder under INGEST_UPLOAD_DIR."""
    name = Path(upload.name or "").name
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise IngestRequestError(
            f"upload: {name or 'the file'} is not an archive or manifest "
            f"({', '.join(UPLOAD_SUFFIXES)})"
        )
    limit = settings.INGEST_UPLOAD_MAX_BYTES
    if upload.size is not None and upload.size > limit:
        raise IngestRequestError(
            f"upload: {name} is {upload.size:,} bytes; the limit is {limit:,} "
            "(INGEST_UPLOAD_MAX_BYTES); put it in an ingest root folder instead"
        )
    folder = Path(settings.INGEST_UPLOAD_DIR) / secrets.token_hex(8)
    folder.mkdir(parents=True, exist_ok=False)
    target = folder / re.sub(r"[^A-Za-z0-9._-]", "_", name)
    with target.open("wb") as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
    return target


def start_ingest_from_request(
    *, source_name: str, upload: Any = None, folder: str = "", user: Any = None
) -> IngestBatch:
    """Start an ingest job from exactly one of an upload or a folder inside the ingest roots."""
    if bool(upload) == bool((folder or "").strip()):
        raise IngestRequestError("upload or folder: give exactly one of the two")
    path = resolve_root_folder(folder) if folder and folder.strip() else save_upload(upload)
    try:
        return enqueue_ingest([path], source_name, user=user)
    except IngestRequestError:
        raise
    except ValueError as exc:  # a bad source name, worded by the ingest service
        raise IngestRequestError(f"source: {exc}") from exc
