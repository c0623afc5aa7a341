"""Turn the PATHs a person gives `ingest` into a stream of items to validate.

A PATH may be a folder (walked recursively in sorted order; hidden files and folders skipped), a
`.zip`/`.tar`/`.tar.gz`/`.tgz` archive, a `.csv`/`.parquet` manifest whose column holds local
paths or http(s) URLs, a single file, or a URL. URLs are downloaded by `fetch.fetch_url` (public
addresses only unless allowed); a manifest's local paths and `file://` URLs must lie in its own
folder or in `SourceLimits.manifest_roots`. Each `SourceItem` has a stable `origin` (the
path, `archive.zip!member/name.png`, or the URL) and reads its bytes only when asked.

Nothing here raises for bad input: a member that must not be read (path traversal, absolute
name, link, device, too large, over the caps) or a row that cannot be used becomes an item whose
`refusal` says why, so the batch records it and goes on. Archives are never extracted to disk:
zip members are read on demand from the open archive; tar members are read while the archive is
streamed (a gzip stream cannot seek backwards cheaply), so iterate `iter_items` lazily.
"""

from __future__ import annotations

import csv
import os
import re
import stat
import tarfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from curation.ingestion.fetch import FetchError, FetchOptions, fetch_url

PATH_COLUMNS = ("path", "url", "image", "image_path", "image_url", "file", "filepath", "uri")
CAPTION_COLUMNS = ("caption", "text", "prompt")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_SKIPPED_ARCHIVE_DIRS = ("__MACOSX",)


class SourceError(Exception):
    """A reason, worded for a person, why an item's bytes cannot be had."""


@dataclass(frozen=True)
class SourceLimits:
    """Caps that keep a hostile or mistaken input from exhausting memory or disk."""

    max_members: int = 100_000
    max_member_bytes: int = 100 * 1024 * 1024
    max_archive_bytes: int = 8 * 1024 * 1024 * 1024
    max_file_bytes: int = 100 * 1024 * 1024
    # Folders a manifest may name files in besides its own; `file://` URLs and absolute or
    # `..` paths elsewhere are refused (a manifest is untrusted input).
    manifest_roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceItem:
    origin: str
    reader: Callable[[], bytes] | None = None
    caption: str | None = None
    refusal: str | None = None

    def read(self) -> bytes:
        """The item's bytes, or SourceError with the reason they cannot be had."""
        if self.refusal is not None or self.reader is None:
            raise SourceError(self.refusal or "nothing to read")
        return self.reader()

    @classmethod
    def refused(cls, origin: str, reason: str) -> SourceItem:
        return cls(origin=origin, refusal=reason)


def iter_items(
    paths: Iterable[str | Path],
    *,
    limits: SourceLimits | None = None,
    fetch: FetchOptions | None = None,
) -> Iterator[SourceItem]:
    """Every item under `paths`, in a deterministic order."""
    limits = limits or SourceLimits()
    fetch = fetch or FetchOptions()
    for raw in paths:
        text = str(raw)
        if _is_url(text):
            yield SourceItem(text, partial(_fetch, text, fetch))
            continue
        path = Path(text)
        name = path.name.lower()
        if path.is_dir():
            yield from _iter_folder(path, limits)
        elif not path.exists():
            yield SourceItem.refused(text, "no such file or directory")
        elif name.endswith(".zip"):
            yield from _iter_zip(path, limits)
        elif name.endswith(_TAR_SUFFIXES):
            yield from _iter_tar(path, limits)
        elif name.endswith(".csv"):
            yield from _iter_csv_manifest(path, limits, fetch)
        elif name.endswith(".parquet"):
            yield from _iter_parquet_manifest(path, limits, fetch)
        else:
            yield _file_item(path, limits)


# --- local files ----------------------------------------------------------------------------------


def _iter_folder(folder: Path, limits: SourceLimits) -> Iterator[SourceItem]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield _file_item(Path(root) / name, limits)


def _file_item(path: Path, limits: SourceLimits, caption: str | None = None) -> SourceItem:
    return SourceItem(str(path), partial(_read_file, path, limits.max_file_bytes), caption)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise SourceError("not a regular file")
        if size > max_bytes:
            raise SourceError(f"file is {_size(size)}, above the {_size(max_bytes)} limit")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise SourceError("no such file") from exc
    except OSError as exc:
        raise SourceError(f"cannot read file: {exc.strerror or exc}") from exc


# --- archives -------------------------------------------------------------------------------------


def _member_name_problem(name: str) -> str | None:
    posix = name.replace("\\", "/")
    if "\x00" in name:
        return "member name contains a NUL byte"
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "member has an absolute path (refused: it could write outside the archive)"
    if ".." in PurePosixPath(posix).parts:
        return "member path contains '..' (path traversal refused)"
    return None


def _is_hidden_member(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any((p.startswith(".") and p != "..") or p in _SKIPPED_ARCHIVE_DIRS for p in parts)


class _Caps:
    """Counts members and bytes of one archive against SourceLimits."""

    def __init__(self, archive: Path, limits: SourceLimits) -> None:
        self.archive, self.limits = archive, limits
        self.members = 0
        self.total = 0

    def over_count(self) -> bool:
        self.members += 1
        return self.members > self.limits.max_members

    def size_problem(self, size: int) -> str | None:
        if size > self.limits.max_member_bytes:
            return (
                f"member is {_size(size)} uncompressed, above the "
                f"{_size(self.limits.max_member_bytes)} per-member limit"
            )
        if self.total + size > self.limits.max_archive_bytes:
            return (
                f"archive's total uncompressed size would exceed the "
                f"{_size(self.limits.max_archive_bytes)} limit (possible zip bomb)"
            )
        self.total += size
        return None

    def count_refusal(self, unread: str) -> SourceItem:
        return SourceItem.refused(
            str(self.archive),
            f"archive has {unread} members beyond the {self.limits.max_members:,} member cap; "
            "they were not read",
        )


def _iter_zip(path: Path, limits: SourceLimits) -> Iterator[SourceItem]:
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield SourceItem.refused(str(path), f"not a readable zip archive: {exc}")
        return
    caps = _Caps(path, limits)
    lock = threading.Lock()
    beyond = 0
    for info in infos:
        if info.is_dir() or _is_hidden_member(info.filename):
            continue
        if caps.over_count():
            beyond += 1
            continue
        origin = f"{path}!{info.filename}"
        file_type = stat.S_IFMT(info.external_attr >> 16)
        reason = _member_name_problem(info.filename)
        if reason is None and file_type == stat.S_IFLNK:
            reason = "member is a symbolic link (links are not followed)"
        elif reason is None and file_type not in (0, stat.S_IFREG):
            reason = "member is a device, FIFO or other special file"
        elif reason is None and info.flag_bits & 0x1:
            reason = "member is encrypted"
        reason = reason or caps.size_problem(info.file_size)
        if reason:
            yield SourceItem.refused(origin, reason)
        else:
            # The ZipFile stays open while items refer to it; reads from pool threads share it.
            yield SourceItem(origin, partial(_read_zip_member, archive, info, lock))
    if beyond:
        yield caps.count_refusal(f"{beyond:,} more")


def _read_zip_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, lock: threading.Lock
) -> bytes:
    try:
        # ZipExtFile never returns more than the declared file_size, which the caps checked.
        with lock, archive.open(info) as member:
            return member.read()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise SourceError(f"cannot read archive member: {exc}") from exc
    except Exception as exc:  # zlib/bz2/lzma errors surface under several names
        raise SourceError(f"cannot read archive member: {type(exc).__name__}: {exc}") from exc


def _iter_tar(path: Path, limits: SourceLimits) -> Iterator[SourceItem]:
    caps = _Caps(path, limits)
    try:
        # Closed by the `with` below; opening sits apart so its errors become a refusal.
        archive = tarfile.open(path, mode="r|*")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield SourceItem.refused(str(path), f"not a readable tar archive: {exc}")
        return
    with archive:
        try:
            for member in archive:
                if member.isdir() or _is_hidden_member(member.name):
                    continue
                if caps.over_count():
                    yield caps.count_refusal("more")
                    return
                origin = f"{path}!{member.name}"
                reason = _member_name_problem(member.name)
                if reason is None and (member.issym() or member.islnk()):
                    kind = "symbolic" if member.issym() else "hard"
                    reason = (
                        f"member is a {kind} link to {member.linkname!r} (links are not followed)"
                    )
                elif reason is None and (member.ischr() or member.isblk() or member.isfifo()):
                    reason = "member is a device or FIFO"
                elif reason is None and not member.isreg():
                    reason = "member is not a regular file"
                reason = reason or caps.size_problem(member.size)
                if reason:
                    yield SourceItem.refused(origin, reason)
                    continue
                stream = archive.extractfile(member)
                data = stream.read() if stream is not None else b""
                yield SourceItem(origin, partial(_constant, data))
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield SourceItem.refused(
                str(path), f"archive is truncated or corrupt after {caps.members} members: {exc}"
            )
        except Exception as exc:  # zlib/lzma/bz2 decompressor errors
            yield SourceItem.refused(
                str(path), f"archive is corrupt after {caps.members} members: {exc}"
            )


def _constant(data: bytes) -> bytes:
    return data


# --- manifests ------------------------------------------------------------------------------------


def _pick_column(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    return next((lowered[w] for w in wanted if w in lowered), None)


def _manifest_item(
    value: object,
    caption: object,
    where: str,
    base: Path,
    limits: SourceLimits,
    fetch: FetchOptions,
) -> SourceItem:
    text = "" if value is None else str(value).strip()
    cap = None if caption is None or caption == "" else str(caption)
    if not text:
        return SourceItem.refused(where, "empty path/URL cell")
    if _is_url(text):
        return SourceItem(text, partial(_fetch, text, fetch), cap)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", text):
        if text.lower().startswith("file://"):
            text = urllib.request.url2pathname(text[7:])
        else:
            return SourceItem.refused(text, "unsupported URL scheme (only http, https and paths)")
    path = Path(text)
    if not path.is_absolute():
        path = base / path
    problem = _outside_roots(path, base, limits.manifest_roots)
    if problem:
        return SourceItem.refused(f"{where}: {text}"[:1024], problem)
    return _file_item(path, limits, cap)


def _outside_roots(path: Path, base: Path, roots: tuple[str, ...]) -> str | None:
    # resolve() follows links, so a link inside the manifest's folder cannot point outside.
    real = path.resolve()
    allowed = [base.resolve(), *(Path(r).resolve() for r in roots)]
    if any(real.is_relative_to(root) for root in allowed):
        return None
    return (
        f"path outside the manifest's folder and the configured roots ({', '.join(map(str, allowed))}); "
        "add its folder to INGEST_LOCAL_ROOTS to allow it"
    )


def _iter_csv_manifest(
    path: Path, limits: SourceLimits, fetch: FetchOptions
) -> Iterator[SourceItem]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        yield SourceItem.refused(str(path), f"cannot read manifest: {exc.strerror or exc}")
        return
    with handle:
        try:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            path_column = _pick_column(columns, PATH_COLUMNS)
            if path_column is None:
                yield _missing_column(path, columns)
                return
            caption_column = _pick_column(columns, CAPTION_COLUMNS)
            for row_number, row in enumerate(reader, start=2):
                yield _manifest_item(
                    row.get(path_column),
                    row.get(caption_column) if caption_column else None,
                    f"{path}:row {row_number}",
                    path.parent,
                    limits,
                    fetch,
                )
        except (csv.Error, UnicodeDecodeError) as exc:
            yield SourceItem.refused(str(path), f"manifest is not valid UTF-8 CSV: {exc}")


def _iter_parquet_manifest(
    path: Path, limits: SourceLimits, fetch: FetchOptions
) -> Iterator[SourceItem]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        columns = list(parquet.schema_arrow.names)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, …
        yield SourceItem.refused(str(path), f"not a readable Parquet manifest: {exc}")
        return
    path_column = _pick_column(columns, PATH_COLUMNS)
    if path_column is None:
        yield _missing_column(path, columns)
        return
    caption_column = _pick_column(columns, CAPTION_COLUMNS)
    wanted = [path_column] + ([caption_column] if caption_column else [])
    row_number = 0
    try:
        for batch in parquet.iter_batches(batch_size=8192, columns=wanted):
            values = batch.column(0).to_pylist()
            captions = batch.column(1).to_pylist() if caption_column else [None] * len(values)
            for value, caption in zip(values, captions, strict=True):
                row_number += 1
                yield _manifest_item(
                    value, caption, f"{path}:row {row_number}", path.parent, limits, fetch
                )
    except Exception as exc:
        yield SourceItem.refused(
            str(path), f"Parquet manifest unreadable after row {row_number}: {exc}"
        )


def _missing_column(path: Path, columns: list[str]) -> SourceItem:
    return SourceItem.refused(
        str(path),
        f"manifest has no path/URL column (looked for {', '.join(PATH_COLUMNS)}; "
        f"found {', '.join(columns) or 'no columns'})",
    )


# --- URLs -----------------------------------------------------------------------------------------


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _fetch(url: str, options: FetchOptions) -> bytes:
    try:
        return fetch_url(url, options)
    except FetchError as exc:
        raise SourceError(str(exc)) from exc


def _size(size: int) -> str:
    return f"{size / 1_048_576:.1f} MiB" if size >= 1_048_576 else f"{size:,} bytes"
