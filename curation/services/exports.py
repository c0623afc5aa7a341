"""Export a frozen DatasetVersion as Parquet, an image folder with metadata.jsonl, or WebDataset.

Exports read the version's frozen manifest (checked against its checksum), never the live
tables, so an export is exactly the version that was frozen. Image files are copied byte for byte
from storage: a transparent sticker stays the PNG/WebP it was stored as, with its alpha channel
bit-exact — nothing is decoded, flattened or re-encoded on the way out.

Layouts (one sub-tree per split present, so Hugging Face `datasets` picks the splits up):
- parquet: `manifest.parquet` (the frozen manifest itself) and `data/{split}.parquet` holding
  the manifest columns plus `image` = {bytes, path}, the struct `datasets.Image()` reads;
  the schema carries `datasets` feature metadata so the column loads as images.
- folder: `{split}/{sha256}.{ext}` and `{split}/metadata.jsonl` (`file_name` + the manifest
  columns), the `imagefolder` layout.
- webdataset: `{split}-000000.tar`, … written with webdataset's ShardWriter; each sample is
  `{sha256}.{ext}` plus `{sha256}.json` with the manifest columns. Tar member times are the
  freeze time, so the same version exports to the same bytes.
Every export ends by writing `export.json` (version, checksum, format, rows per split, files):
its presence means the export finished. An image quarantined after the version was frozen is
withheld (no bytes, no metadata row); `export.json` lists its sha256 under `withheld`. The Parquet
layout's `manifest.parquet` stays the frozen file, so its checksum can still be verified.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from django.conf import settings

from curation.models import DatasetVersion, Image
from curation.services.storage import read_bytes, store_folder_as_zip
from curation.services.versions import MANIFEST_SCHEMA

FORMATS = ("parquet", "folder", "webdataset")
DEFAULT_SHARD_SIZE = 1000
ROWS_PER_GROUP = 256
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_HF_DTYPES = {"string": "string", "float": "float32", "int32": "int32", "bool": "bool"}

ProgressFn = Callable[[int, int], None]


class ExportError(ValueError):
    """Why a version cannot be exported, worded for the person who asked."""


@dataclass
class ExportResult:
    format: str
    out_dir: str
    rows: int
    splits: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def exports_root() -> Path:
    return Path(getattr(settings, "EXPORTS_ROOT", Path(settings.VAR_DIR) / "exports"))


def default_out_dir(version: DatasetVersion, fmt: str) -> Path:
    return exports_root() / f"{version.dataset.name}-v{version.number}" / fmt


def _manifest(version: DatasetVersion) -> bytes:
    if not version.is_frozen:
        raise ExportError(f"{version} is a draft; freeze it before exporting")
    data = read_bytes(version.manifest_path)
    if hashlib.sha256(data).hexdigest() != version.checksum:
        raise ExportError(
            f"manifest {version.manifest_path} of {version} does not match its checksum "
            f"{version.checksum[:12]}; storage is corrupt, refusing to export"
        )
    return data


def _rows(manifest: bytes) -> Iterator[dict[str, Any]]:
    for record_batch in pq.ParquetFile(io.BytesIO(manifest)).iter_batches(batch_size=1024):
        yield from record_batch.to_pylist()


def _extension(storage_key: str) -> str:
    return storage_key.rsplit(".", 1)[-1].lower()


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "storage_key"}


def _image_bytes(row: dict[str, Any], version: DatasetVersion) -> bytes:
    try:
        return read_bytes(row["storage_key"])
    except FileNotFoundError as exc:
        raise ExportError(
            f"{version}: image {row['image_sha256'][:12]} is missing from storage "
            f"({row['storage_key']})"
        ) from exc


def export_version(
    version: DatasetVersion,
    fmt: str,
    out_dir: str | Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    on_progress: ProgressFn | None = None,
) -> ExportResult:
    """Write `version` in format `fmt` under `out_dir` (created if needed)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    manifest = _manifest(version)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(format=fmt, out_dir=str(out), rows=0)
    writer = {"parquet": _ParquetWriter, "folder": _FolderWriter, "webdataset": _WdsWriter}[fmt](
        out, version, shard_size
    )
    try:
        if fmt == "parquet":
            (out / "manifest.parquet").write_bytes(manifest)
            result.files.append("manifest.parquet")
        quarantined = set(
            Image.objects.quarantined()
            .filter(pk__in=version.items.values("image_id"))
            .values_list("sha256", flat=True)
        )
        for row in _rows(manifest):
            if row["image_sha256"] in quarantined:
                result.withheld.append(row["image_sha256"])
                continue
            writer.write(row, _image_bytes(row, version))
            result.rows += 1
            result.splits[row["split"]] = result.splits.get(row["split"], 0) + 1
            if on_progress is not None:
                on_progress(result.rows, version.row_count)
    finally:
        result.files.extend(writer.close())
    summary = {
        "version": str(version),
        "version_id": version.pk,
        "checksum": version.checksum,
        **result.to_json(),
    }
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


class _ParquetWriter:
    def __init__(self, out: Path, version: DatasetVersion, shard_size: int) -> None:
        self.out = out / "data"
        self.out.mkdir(exist_ok=True)
        self.schema = MANIFEST_SCHEMA.append(pa.field("image", IMAGE_STRUCT)).with_metadata(
            {"huggingface": json.dumps({"info": {"features": _hf_features()}})}
        )
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.buffers: dict[str, list[dict[str, Any]]] = {}

    def write(self, row: dict[str, Any], data: bytes) -> None:
        split = row["split"]
        if split not in self.writers:
            self.writers[split] = pq.ParquetWriter(
                self.out / f"{split}.parquet", self.schema, compression="zstd"
            )
            self.buffers[split] = []
        path = f"{row['image_sha256']}.{_extension(row['storage_key'])}"
        self.buffers[split].append({**row, "image": {"bytes": data, "path": path}})
        if len(self.buffers[split]) >= ROWS_PER_GROUP:
            self._flush(split)

    def _flush(self, split: str) -> None:
        if self.buffers[split]:
            table = pa.Table.from_pylist(self.buffers[split], schema=self.schema)
            self.writers[split].write_table(table)
            self.buffers[split] = []

    def close(self) -> list[str]:
        for split, writer in self.writers.items():
            self._flush(split)
            writer.close()
        return [f"data/{split}.parquet" for split in sorted(self.writers)]


def _hf_features() -> dict[str, Any]:
    features: dict[str, Any] = {
        f.name: {"dtype": _HF_DTYPES.get(str(f.type), str(f.type)), "_type": "Value"}
        for f in MANIFEST_SCHEMA
    }
    features["image"] = {"_type": "Image"}
    return features


class _FolderWriter:
    def __init__(self, out: Path, version: DatasetVersion, shard_size: int) -> None:
        self.out = out
        self.metadata: dict[str, io.TextIOWrapper] = {}

    def write(self, row: dict[str, Any], data: bytes) -> None:
        split = row["split"]
        if split not in self.metadata:
            (self.out / split).mkdir(exist_ok=True)
            self.metadata[split] = open(  # noqa: SIM115 - closed in close()
                self.out / split / "metadata.jsonl", "w", encoding="utf-8"
            )
        name = f"{row['image_sha256']}.{_extension(row['storage_key'])}"
        (self.out / split / name).write_bytes(data)
        line = {"file_name": name, **_metadata(row)}
        self.metadata[split].write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> list[str]:
        for handle in self.metadata.values():
            handle.close()
        return [f"{split}/metadata.jsonl" for split in sorted(self.metadata)]


class _WdsWriter:
    def __init__(self, out: Path, version: DatasetVersion, shard_size: int) -> None:
        self.out = out
        self.shard_size = shard_size
        stamp = version.frozen_at or version.created_at
        self.mtime = stamp.timestamp() if stamp else 0.0
        self.writers: dict[str, wds.ShardWriter] = {}
        self.files: list[str] = []

    def write(self, row: dict[str, Any], data: bytes) -> None:
        split = row["split"]
        if split not in self.writers:
            # ShardWriter fills the pattern with `%`: escape any `%` in the folder's own name.
            pattern = str(self.out).replace("%", "%%") + f"/{split}-%06d.tar"
            self.writers[split] = wds.ShardWriter(
                pattern,
                maxcount=self.shard_size,
                verbose=0,
                encoder=False,
                mtime=self.mtime,
                post=lambda name: self.files.append(Path(name).name),
            )
        metadata = json.dumps(_metadata(row), ensure_ascii=False).encode("utf-8")
        self.writers[split].write(
            {
                "__key__": row["image_sha256"],
                _extension(row["storage_key"]): data,
                "json": metadata,
            }
        )

    def close(self) -> list[str]:
        for writer in self.writers.values():
            writer.close()
        return sorted(self.files)


def download_key(version: DatasetVersion, fmt: str) -> str:
    return f"exports/{version.dataset.name}-v{version.number}/{fmt}-{version.checksum[:12]}.zip"


def package_for_download(version: DatasetVersion, fmt: str, out_dir: str | Path) -> str:
    """Zip a finished export folder into media storage, so a browser can fetch it through a
    signed URL (curation.media); returns the storage key. Images are stored, not recompressed."""
    out = Path(out_dir)
    if not (out / "export.json").exists():
        raise ExportError(f"{out} holds no finished export (export.json is missing)")
    # A re-export of the same version replaces the archive.
    return store_folder_as_zip(out, download_key(version, fmt), f"{out.parent.name}/{fmt}")
