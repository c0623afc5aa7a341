"""Frozen dataset versions as the engine reads them: a local manifest file and an image resolver.

The engine is Django-free and reads local files. With the default FileSystemStorage the manifest
and images are read where they are stored; with a remote storage (S3) they are copied once into
a cache folder keyed by content hash, so a second run on the same version downloads nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import QuerySet

from curation.models import DatasetItem, DatasetVersion, Image
from curation.services.storage import read_bytes


class ManifestRefused(ValueError):
    """A dataset version's manifest is missing or differs from the checksum it was frozen with."""


def cache_dir() -> Path:
    return Path(getattr(settings, "TRAINING_CACHE_DIR", settings.VAR_DIR / "cache" / "training"))


def _local_path(key: str) -> Path | None:
    try:
        return Path(default_storage.path(key))
    except NotImplementedError:  # remote storage: no local path
        return None


def _download(key: str, target: Path) -> Path:
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(read_bytes(key))
        os.replace(temporary, target)
    return target


def local_manifest(version: DatasetVersion, *, verify: bool = True) -> Path:
    """The manifest as a local file, after checking it still hashes to the frozen checksum."""
    from training.engine.data import file_sha256

    label = f"dataset version {version} (id {version.pk})"
    if not version.is_frozen or not version.manifest_path or not version.checksum:
        raise ManifestRefused(f"{label}: not frozen, so it has no manifest to train on")
    if not default_storage.exists(version.manifest_path):
        raise ManifestRefused(f"{label}: manifest {version.manifest_path} is missing from storage")
    path = _local_path(version.manifest_path)
    if path is None:
        path = _download(
            version.manifest_path, cache_dir() / "manifests" / f"{version.checksum}.parquet"
        )
    if verify:
        actual = file_sha256(path)
        if actual != version.checksum:
            raise ManifestRefused(
                f"{label}: manifest checksum mismatch: frozen with sha256 {version.checksum}, "
                f"the file {version.manifest_path} now hashes to {actual}; it changed after "
                "freezing, so training on it is refused"
            )
    return path


class StorageResolver:
    """image_sha256 → a local path (FileSystemStorage) or a cached download of the stored bytes.

    Built from the Image rows once, so the training loop never queries the database.
    """

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    @classmethod
    def for_versions(cls, versions: Iterable[DatasetVersion]) -> StorageResolver:
        versions = list(versions)
        items = DatasetItem.objects.filter(version__in=[v.pk for v in versions])
        resolver = cls._from(Image.objects.filter(pk__in=items.values("image_id")))
        asking = [v.pk for v in versions if v.lineage.get("original_bytes")]
        if asking:  # these versions train on the files as supplied, metadata and all
            wanted = DatasetItem.objects.filter(version__in=asking).values("image_id")
            originals = (
                Image.objects.filter(pk__in=wanted)
                .exclude(status=Image.Status.QUARANTINED)
                .exclude(original_key="")
                .values_list("sha256", "original_key")
            )
            resolver.keys.update(originals)
        return resolver

    @classmethod
    def for_sha256(cls, shas: Iterable[str]) -> StorageResolver:
        return cls._from(Image.objects.filter(sha256__in=list(shas)))

    @classmethod
    def _from(cls, images: QuerySet[Image]) -> StorageResolver:
        # A quarantined image is left out: the engine skips its rows and names the image.
        rows = (
            images.exclude(storage_key="")
            .exclude(status=Image.Status.QUARANTINED)
            .values_list("sha256", "storage_key")
        )
        return cls(dict(rows.iterator(chunk_size=5000)))

    def __call__(self, row: object) -> str:
        sha = row.image_sha256  # type: ignore[attr-defined]
        key = self.keys.get(sha)
        if key is None:
            # The engine turns this into a skipped sample that names the image.
            raise FileNotFoundError(f"image {sha}: quarantined, or no Image row with stored bytes")
        local = _local_path(key)
        if local is not None:
            return str(local)
        return str(_download(key, cache_dir() / "images" / sha[:2] / Path(key).name))
