"""Content-addressed media storage: a file's key is derived from its sha256."""

from __future__ import annotations

import hashlib

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def content_key(sha256: str, extension: str, prefix: str = "images") -> str:
    ext = extension.lower().lstrip(".") or "bin"
    return f"{prefix}/{sha256[:2]}/{sha256[2:4]}/{sha256}.{ext}"


def store_bytes(data: bytes, extension: str, *, prefix: str = "images", sha256: str = "") -> str:
    """Store `data` under its content key; storing the same bytes twice writes once."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    key = content_key(digest, extension, prefix)
    if not default_storage.exists(key):
        saved = default_storage.save(key, ContentFile(data))
        if saved != key:  # a concurrent writer won the race; keep theirs, identical content
            default_storage.delete(saved)
    return key


def read_bytes(key: str) -> bytes:
    with default_storage.open(key, "rb") as handle:
        return handle.read()
