"""DatasetVersion manifests: a run trains on exact, frozen data, so the manifest's bytes must hash
to the checksum the version was frozen with, or the run is refused before any step."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ManifestError(ValueError):
    """A manifest cannot be used: unreadable, missing columns, or bad rows."""


class ManifestChecksumError(ManifestError):
    """The manifest's bytes differ from the checksum its DatasetVersion was frozen with."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: manifest checksum mismatch: expected sha256 {expected}, got {actual}; "
            "the file changed after its dataset version was frozen, refusing to train on it"
        )
        self.path, self.expected, self.actual = path, expected, actual


@dataclass(frozen=True)
class ManifestRow:
    image_sha256: str
    caption: str
    label: str | None = None
    weight: float = 1.0
    split: str | None = None
    image_path: str | None = None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest_checksum(path: str | Path, expected_sha256: str) -> None:
    path = Path(path)
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise ManifestChecksumError(path, expected_sha256, actual)


def read_manifest(
    path: str | Path, expected_sha256: str | None = None, split: str | None = None
) -> list[ManifestRow]:
    """Rows of a Parquet manifest, after checking its checksum when one is given.

    Text comes from `caption`, else `prompt`; `weight` defaults to 1 and `split` filters rows.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    if expected_sha256 is not None:
        verify_manifest_checksum(path, expected_sha256)
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for bad files
        raise ManifestError(f"{path}: not a readable Parquet file: {error}") from error
    columns = set(table.column_names)
    if "image_sha256" not in columns:
        raise ManifestError(f"{path}: missing column 'image_sha256' (has {sorted(columns)})")
    text_column = "caption" if "caption" in columns else "prompt" if "prompt" in columns else None
    if text_column is None:
        raise ManifestError(f"{path}: needs a 'caption' or 'prompt' column (has {sorted(columns)})")
    data = table.to_pydict()
    count = table.num_rows
    rows = []
    for i in range(count):
        row_split = data["split"][i] if "split" in columns else None
        if split is not None and row_split is not None and row_split != split:
            continue
        sha = data["image_sha256"][i]
        if not isinstance(sha, str) or not sha:
            raise ManifestError(f"{path}: row {i} has an empty image_sha256")
        weight = data["weight"][i] if "weight" in columns else 1.0
        weight = 1.0 if weight is None else float(weight)
        if not math.isfinite(weight) or weight < 0:
            # It multiplies the row's loss: negative would push the model away from the image,
            # NaN or infinite would poison every step that draws it.
            raise ManifestError(
                f"{path}: row {i} ({sha}) has weight {weight}; weights must be finite and >= 0"
            )
        label = data["label"][i] if "label" in columns else None
        rows.append(
            ManifestRow(
                image_sha256=sha,
                caption=data[text_column][i] or "",
                label=None if label is None else str(label),
                weight=weight,
                split=row_split,
                image_path=data["image_path"][i] if "image_path" in columns else None,
            )
        )
    if not rows:
        raise ManifestError(f"{path}: no rows" + (f" in split {split!r}" if split else ""))
    return rows


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> str:
    """Write rows as a Parquet manifest and return its sha256 (used by tests, demo and bench)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return file_sha256(path)
