"""Media storage: content-addressed files (a file's key is derived from its sha256), and
finished export folders stored as one zip a signed URL (curation.media) serves."""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from pathlib import Path

from django.core.files import File
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


def store_folder_as_zip(folder: str | Path, key: str, arcroot: str) -> str:
    """Zip every file under `folder` (as `arcroot/relative/path`) into media storage at `key`,
    replacing an archive stored there before; returns the key. Files are stored, not
    recompressed: images and weights gain nothing from deflate."""
    folder = Path(folder)
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                archive.write(path, arcname=f"{arcroot}/{path.relative_to(folder)}")
        handle.seek(0)
        if default_storage.exists(key):
            default_storage.delete(key)
        return default_storage.save(key, File(handle, name=key.rsplit("/", 1)[-1]))
