"""Run validation over a stream of items and classify each one, reporting as it goes.

Classification, made in input order whatever the thread timing, so a re-run decides the same:
- `duplicate`: the sha256 of the original bytes is already known (`already_seen`) or was seen
  earlier in this batch. Known bytes are not decoded again, which is what makes a resumed run
  fast: everything the killed run persisted is hashed and skipped.
- `near_duplicate`: decoded fine, large enough to have a perceptual hash (validate's
  `PHASH_MIN_SIDE`), and that hash is within `near_distance` bits of an image ingested earlier (this batch, or whatever the caller put in `near_index`); the nearest
  one is named in `duplicate_of`. Near-duplicates are not added to the index, so chains do not
  drift away from the original.
- `quarantined`: could not be read or refused by validation, with the reason. A byte-identical
  copy of a quarantined file gets the same reason, and so do bytes the caller lists in
  `refused_before` (refused by an earlier batch): they are recognised, not decoded again.
- `ingested`: everything else; added to the near-duplicate index under its sha256.

Reading and validating run in a thread pool (Pillow and zlib release the GIL); classification,
`already_seen`, `on_result`, `on_progress` and `should_cancel` all run in the calling thread,
so the Django side may use the ORM in them. `should_cancel` is checked between items; results not
yet handed to `on_result` when it says stop are dropped and redone by the next run.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from curation.ingestion.dedup import NearDuplicateIndex
from curation.ingestion.sources import SourceError, SourceItem
from curation.ingestion.validate import RefusedFile, ValidatedImage, validate_image_bytes

Status = Literal["ingested", "duplicate", "near_duplicate", "quarantined"]
STATUSES: tuple[Status, ...] = ("ingested", "duplicate", "near_duplicate", "quarantined")
DEFAULT_NEAR_DISTANCE = 4


@dataclass(frozen=True)
class IngestResult:
    """What happened to one item. `duplicate_of` is a sha256 (exact) or a near-duplicate index key."""

    position: int
    origin: str
    status: Status
    sha256: str | None = None
    image: ValidatedImage | None = None
    caption: str | None = None
    reason: str | None = None
    duplicate_of: str | None = None
    distance: int | None = None


@dataclass
class IngestSummary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    refusals: list[dict[str, str]] = field(default_factory=list)
    cancelled: bool = False
    skipped: int = 0

    @property
    def processed(self) -> int:
        return sum(self.counts.values())

    def record(self, result: IngestResult) -> None:
        self.counts[result.status] += 1
        if result.status == "quarantined":
            self.refusals.append({"path": result.origin, "reason": result.reason or ""})

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "refusals": list(self.refusals),
            "cancelled": self.cancelled,
            "skipped": self.skipped,
        }


@dataclass
class _Validation:
    position: int
    item: SourceItem
    sha256: str
    future: Future[ValidatedImage | RefusedFile]
    copies: list[tuple[int, SourceItem]] = field(default_factory=list)


@dataclass(frozen=True)
class _Settled:
    """Outcome of the first occurrence of some bytes, for later copies in the batch."""

    status: Status
    origin: str
    reason: str | None = None


class _InlineExecutor(Executor):
    """Runs work at submit time: `workers=0` gives a single-threaded, step-by-step run."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _read_and_hash(item: SourceItem) -> tuple[bytes, str]:
    data = item.read()
    return data, hashlib.sha256(data).hexdigest()


def ingest_items(
    items: Iterable[SourceItem],
    *,
    already_seen: Callable[[str], bool] | Container[str],
    on_result: Callable[[IngestResult], None],
    on_progress: Callable[[int, int | None], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    near_index: NearDuplicateIndex | None = None,
    near_distance: int = DEFAULT_NEAR_DISTANCE,
    workers: int | None = None,
    total: int | None = None,
    validate_options: dict[str, Any] | None = None,
    refused_before: Mapping[str, str] | None = None,
    settled: Callable[[str, str], bool] | None = None,
) -> IngestSummary:
    """Validate and classify every item, calling `on_result` for each as soon as it is decided.

    `already_seen` answers "is this sha256 (of the original bytes) already in the pool?" — a set
    or a function. `near_index` holds the pool's existing perceptual hashes keyed by whatever the
    caller wants back in `duplicate_of` (this run adds its ingested images to it by sha256).
    `on_progress(done, total)` follows each result; `total` is len(items) when it has one.
    `refused_before` maps the sha256 of files refused earlier to how that refusal reads.
    `settled(origin, sha256)` says an earlier run of the same batch already settled this file
    (same place, same content): it is then skipped without a result and counted in `skipped`.
    """
    seen: Callable[[str], bool] = (
        already_seen.__contains__ if isinstance(already_seen, Container) else already_seen
    )
    index = near_index if near_index is not None else NearDuplicateIndex()
    options = dict(validate_options or {})
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    window = max(2, workers * 4)
    summary = IngestSummary()
    decided: dict[str, _Settled | _Validation] = {}
    reads: deque[tuple[int, SourceItem, Future[tuple[bytes, str]]]] = deque()
    validations: deque[_Validation] = deque()
    stream = enumerate(items)
    exhausted = False

    def emit(result: IngestResult) -> None:
        on_result(result)
        summary.record(result)
        if on_progress is not None:
            on_progress(summary.processed, total)

    def emit_copy(position: int, item: SourceItem, sha256: str, first: _Settled) -> None:
        if first.status == "quarantined":
            reason = f"same bytes as {first.origin}, which was refused: {first.reason}"
            emit(
                IngestResult(
                    position, item.origin, "quarantined", sha256, None, item.caption, reason
                )
            )
        else:
            emit(
                IngestResult(
                    position,
                    item.origin,
                    "duplicate",
                    sha256,
                    None,
                    item.caption,
                    duplicate_of=sha256,
                )
            )

    def handle_read(executor: Executor) -> None:
        position, item, future = reads.popleft()
        try:
            data, sha256 = future.result()
        except SourceError as exc:
            emit(
                IngestResult(
                    position, item.origin, "quarantined", caption=item.caption, reason=str(exc)
                )
            )
            return
        except Exception as exc:
            emit(
                IngestResult(
                    position,
                    item.origin,
                    "quarantined",
                    caption=item.caption,
                    reason=f"cannot read: {type(exc).__name__}: {exc}",
                )
            )
            return
        if settled is not None and settled(item.origin, sha256):
            summary.skipped += 1
            return
        first = decided.get(sha256)
        if isinstance(first, _Validation):
            first.copies.append((position, item))
        elif first is not None:
            emit_copy(position, item, sha256, first)
        elif refused_before is not None and sha256 in refused_before:
            reason = f"same bytes as a file refused before: {refused_before[sha256]}"
            decided[sha256] = _Settled("quarantined", item.origin, reason)
            emit(
                IngestResult(
                    position, item.origin, "quarantined", sha256, None, item.caption, reason
                )
            )
        elif seen(sha256):
            duplicate = _Settled("duplicate", item.origin)
            decided[sha256] = duplicate
            emit_copy(position, item, sha256, duplicate)
        else:
            pending = _Validation(
                position,
                item,
                sha256,
                executor.submit(validate_image_bytes, data, item.origin, sha256=sha256, **options),
            )
            decided[sha256] = pending
            validations.append(pending)

    def handle_validation() -> None:
        pending = validations.popleft()
        item, sha256 = pending.item, pending.sha256
        try:
            outcome = pending.future.result()
        except Exception as exc:  # validate_image_bytes should not raise; never lose the batch
            outcome = RefusedFile(item.origin, f"validation failed: {type(exc).__name__}: {exc}")
        if isinstance(outcome, RefusedFile):
            first = _Settled("quarantined", item.origin, outcome.reason)
            result = IngestResult(
                pending.position,
                item.origin,
                "quarantined",
                sha256,
                None,
                item.caption,
                outcome.reason,
            )
        else:
            hashed = bool(outcome.phash) and near_distance >= 0
            near = index.nearest(outcome.phash, near_distance) if hashed else None
            if near is not None:
                first = _Settled("near_duplicate", item.origin)
                result = IngestResult(
                    pending.position,
                    item.origin,
                    "near_duplicate",
                    sha256,
                    outcome,
                    item.caption,
                    duplicate_of=near[0],
                    distance=near[1],
                )
            else:
                first = _Settled("ingested", item.origin)
                if outcome.phash:
                    index.add(sha256, outcome.phash)
                result = IngestResult(
                    pending.position, item.origin, "ingested", sha256, outcome, item.caption
                )
        decided[sha256] = first
        emit(result)
        for position, copy in pending.copies:
            emit_copy(position, copy, sha256, first)

    def cancelled() -> bool:
        if should_cancel is not None and should_cancel():
            summary.cancelled = True
        return summary.cancelled

    executor: Executor = ThreadPoolExecutor(workers) if workers > 0 else _InlineExecutor()
    try:
        while not cancelled():
            while not exhausted and len(reads) + len(validations) < window:
                try:
                    position, item = next(stream)
                except StopIteration:
                    exhausted = True
                    break
                reads.append((position, item, executor.submit(_read_and_hash, item)))
            if not reads and not validations:
                break
            # Decide whichever head is ready; each queue is handled strictly in input order.
            if reads and reads[0][2].done():
                handle_read(executor)
            elif validations and validations[0].future.done():
                handle_validation()
            else:
                heads: list[Future[Any]] = [
                    f
                    for f in (
                        reads[0][2] if reads else None,
                        validations[0].future if validations else None,
                    )
                    if f
                ]
                wait(heads, return_when=FIRST_COMPLETED)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return summary
