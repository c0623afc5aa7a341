"""Ingest: run the Django-free pipeline (curation.ingestion) and persist what it decides.

What is kept for each outcome (DESIGN §3, "recorded, not re-stored"):
- ingested: the normalised bytes go to content-addressed storage and an Image row (status ok)
  is created, keyed by the sha256 of the *original* bytes.
- exact duplicate: nothing is stored and no row is made; the batch counts it.
- near-duplicate: an Image row with status `duplicate`, `duplicate_of` the image it resembles,
  its sha256/phash/size/origin, but no stored bytes (`storage_key` is blank). Recording the row
  is what makes a re-run see the file as an exact duplicate instead of deciding it again.
- refused: a Refusal row on the batch with the reason; nothing is stored.

Resuming. Results are committed in input order, in chunks; each chunk's rows, the batch counts
and the batch `position` (how many items are settled) are written in one transaction, and the
job's state gets the same position. A killed or cancelled run therefore leaves exactly a prefix
of the items done, and a resumed run (same batch) skips that prefix without reading it; items
settled but not yet committed are simply redone. A *new* run over the same paths finds every
stored image by sha256 and reports it as a duplicate, so re-running creates no Image rows
(a refused file is refused again and listed on the new batch, which is what a person wants to
see in that batch's report).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from curation.ingestion import (
    FetchOptions,
    IngestResult,
    NearDuplicateIndex,
    SourceItem,
    SourceLimits,
    ValidatedImage,
    ingest_items,
    iter_items,
)
from curation.ingestion.pipeline import DEFAULT_NEAR_DISTANCE
from curation.models import BatchFile, Image, IngestBatch, Refusal, Source
from curation.services.jobs import AttemptStopped, JobCancelled, JobContext, enqueue_job
from curation.services.storage import store_bytes

COMMIT_EVERY = 256
COMMIT_SECONDS = 1.0
STORAGE_THREADS = 2
ORIGIN_MAX = 1024
DEMO_SOURCE = "demo-pool"
# Plain strings: TextChoices member access goes through a slow enum __getattr__ per file.
OK, DUPLICATE = str(Image.Status.OK), str(Image.Status.DUPLICATE)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

ProgressFn = Callable[[int, int | None], None]


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def normalise_paths(paths: Sequence[str | Path]) -> list[str]:
    """Absolute local paths (a worker may run elsewhere in the tree); URLs as given."""
    if not paths:
        raise ValueError("give at least one PATH to ingest")
    return [str(p) if _is_url(str(p)) else str(Path(p).expanduser().resolve()) for p in paths]


def get_source(name: str) -> Source:
    try:
        validate_slug(name)
    except ValidationError as exc:
        raise ValueError(
            f"source name {name!r} is not valid: use letters, digits, '-' and '_' only"
        ) from exc
    source, _ = Source.objects.get_or_create(name=name)
    return source


def create_batch(paths: Sequence[str | Path], source_name: str, *, user: Any = None) -> IngestBatch:
    return IngestBatch.objects.create(
        source=get_source(source_name),
        paths=normalise_paths(paths),
        created_by=user if getattr(user, "pk", None) else None,
    )


def enqueue_ingest(
    paths: Sequence[str | Path], source_name: str, *, user: Any = None
) -> IngestBatch:
    """Create the batch now and a `cpu` job that runs it; the job starts after commit."""
    with transaction.atomic():
        batch = create_batch(paths, source_name, user=user)
        job = enqueue_job("ingest", params={"batch_id": batch.pk}, user=user, target=batch)
        batch.job = job
        batch.save(update_fields=["job", "updated_at"])
    return batch


def source_options() -> tuple[SourceLimits, FetchOptions]:
    """The caps and URL rules of the settings (INGEST_*), for iter_items."""
    limits = SourceLimits(manifest_roots=tuple(str(r) for r in settings.INGEST_LOCAL_ROOTS))
    fetch = FetchOptions(
        timeout_s=settings.INGEST_URL_TIMEOUT_SECONDS,
        deadline_s=settings.INGEST_URL_DEADLINE_SECONDS,
        allow_networks=tuple(settings.INGEST_URL_ALLOW_NETWORKS),
        proxy=settings.INGEST_URL_PROXY or None,
    )
    return limits, fetch


def _items(paths: Sequence[str]) -> Iterator[SourceItem]:
    limits, fetch = source_options()
    return iter_items(paths, limits=limits, fetch=fetch)


def count_items(paths: Sequence[str]) -> int | None:
    """How many items the paths hold, when that costs a directory walk or an archive listing.

    Tar archives are streamed (a gzip stream has no index), so counting would read them twice:
    with one among the paths the total is left unknown and progress shows a count only.
    """
    if any(p.lower().endswith(_TAR_SUFFIXES) for p in paths):
        return None
    return sum(1 for _ in _items(paths))


def refused_before() -> dict[str, str]:
    """sha256 of every file refused so far → where and why, first refusal first."""
    refused: dict[str, str] = {}
    rows = Refusal.objects.exclude(sha256="").order_by("pk")
    for sha256, origin, batch_id, reason in rows.values_list(
        "sha256", "origin", "batch_id", "reason"
    ).iterator(chunk_size=10_000):
        refused.setdefault(sha256, f"{origin} (ingest #{batch_id}): {reason}")
    return refused


def load_pool_state() -> tuple[NearDuplicateIndex, set[str]]:
    """One pass over the pool: the near-duplicate index and the set of known sha256.

    The index holds the perceptual hashes keyed by sha256, near-duplicates left out so chains do
    not drift. The set answers "already ingested?" without a query per file; the index keeps
    the same strings, so the set costs little more. A file another worker stores after this
    snapshot is caught when its row conflicts on insert and counted as a duplicate.
    """
    index = NearDuplicateIndex()
    known: set[str] = set()
    rows = Image.objects.values_list("sha256", "phash", "status")
    for sha256, phash, status in rows.iterator(chunk_size=10_000):
        known.add(sha256)
        if phash and status != DUPLICATE:
            index.add(sha256, phash)
    return index, known


@dataclass(frozen=True)
class StoredImage:
    storage_key: str
    original_key: str  # blank unless metadata was stripped from the stored bytes


def store_image(image: ValidatedImage) -> StoredImage:
    """Store what annotators may see and, when it differs, the file as supplied (apart)."""
    key = store_bytes(image.data, image.extension, sha256=image.stored_sha256)
    original = ""
    if image.original is not None:
        original = store_bytes(
            image.original, image.extension, prefix="originals", sha256=image.sha256
        )
    return StoredImage(key, original)


def _clip(origin: str) -> str:
    return origin[:ORIGIN_MAX]


class _Persister:
    """Buffers results and commits them in chunks, each chunk with its files' BatchFile rows."""

    def __init__(
        self,
        batch: IngestBatch,
        *,
        total: int | None,
        job_ctx: JobContext | None,
        on_progress: ProgressFn | None,
    ) -> None:
        self.batch = batch
        self.total = total
        self.job_ctx = job_ctx
        self.on_progress = on_progress
        self.ready: list[IngestResult] = []
        self.last_commit = time.monotonic()
        self.seen_count = batch.position
        # Storage writes start as soon as a result arrives, in threads (file and network I/O
        # release the GIL), so the commit only waits for them instead of doing them in turn.
        self.writer = ThreadPoolExecutor(STORAGE_THREADS, thread_name_prefix="ingest-store")
        self.stored: dict[str, Future[StoredImage]] = {}

    def on_result(self, result: IngestResult) -> None:
        self.ready.append(result)
        if result.status == "ingested" and result.image is not None:
            self.stored[result.image.sha256] = self.writer.submit(store_image, result.image)
        self.seen_count += 1
        if self.on_progress is not None:
            self.on_progress(self.seen_count, self.total)
        if len(self.ready) >= COMMIT_EVERY or (
            self.ready and time.monotonic() - self.last_commit >= COMMIT_SECONDS
        ):
            self.commit()

    def commit(self) -> None:
        if not self.ready:
            return
        chunk, self.ready = self.ready, []
        with transaction.atomic():
            if self.job_ctx is not None:
                self.job_ctx.fence()
            # Commits of one batch take turns: what "already recorded" means must not change
            # under a commit (two attempts of a job may overlap for a moment).
            locked = IngestBatch.objects.select_for_update().get(pk=self.batch.pk)
            fresh = self._unrecorded(chunk)
            counts = self._persist(fresh)
            BatchFile.objects.bulk_create(
                [
                    BatchFile(
                        batch=locked,
                        origin=_clip(r.origin),
                        sha256=r.sha256 or "",
                        outcome=outcome,
                    )
                    for r, outcome in fresh
                ]
            )
            position = locked.position + len(fresh)
            IngestBatch.objects.filter(pk=locked.pk).update(
                position=position,
                ingested=F("ingested") + counts["ingested"],
                duplicates=F("duplicates") + counts["duplicate"],
                near_duplicates=F("near_duplicates") + counts["near_duplicate"],
                quarantined=F("quarantined") + counts["quarantined"],
                updated_at=timezone.now(),
            )
            if self.job_ctx is not None:
                self.job_ctx.save_state(batch_id=self.batch.pk, position=position)
        self.batch.position = position
        self.last_commit = time.monotonic()
        if self.job_ctx is not None:
            message = f"{position} of {self.total or '?'} files settled"
            # A cancel request raises here; the pipeline's should_cancel sees the same flag and
            # stops between items, so swallow it and let the run end cleanly.
            with contextlib.suppress(JobCancelled):
                self.job_ctx.progress(position, self.total, message)

    def close(self) -> None:
        self.writer.shutdown(wait=True, cancel_futures=True)

    def _unrecorded(self, chunk: list[IngestResult]) -> list[tuple[IngestResult, str]]:
        """The results whose file this batch has not recorded yet, each with its outcome."""
        keys = {(_clip(r.origin), r.sha256 or "") for r in chunk}
        recorded = set(
            BatchFile.objects.filter(
                batch_id=self.batch.pk, origin__in={origin for origin, _ in keys}
            ).values_list("origin", "sha256")
        )
        fresh: list[tuple[IngestResult, str]] = []
        for result in chunk:
            key = (_clip(result.origin), result.sha256 or "")
            if key in recorded:
                continue
            recorded.add(key)
            fresh.append((result, result.status))
        return fresh

    def _persist(self, chunk: list[tuple[IngestResult, str]]) -> dict[str, int]:
        """Write the Image and Refusal rows; returns the counts, correcting `fresh` outcomes in
        place where another batch stored the same bytes a moment ago (then a duplicate)."""
        counts = {"ingested": 0, "duplicate": 0, "near_duplicate": 0, "quarantined": 0}
        batch = self.batch
        fresh: list[Image] = []
        near: list[IngestResult] = []
        refusals: list[Refusal] = []
        for result, _ in chunk:
            if result.status == "ingested":
                image = result.image
                assert image is not None and result.sha256 is not None
                stored = self.stored.pop(image.sha256).result()
                fresh.append(
                    self._image_row(
                        result,
                        status=OK,
                        storage_key=stored.storage_key,
                        original_key=stored.original_key,
                    )
                )
            elif result.status == "near_duplicate":
                near.append(result)
            elif result.status == "quarantined":
                refusals.append(
                    Refusal(
                        batch=batch,
                        origin=_clip(result.origin),
                        sha256=result.sha256 or "",
                        reason=result.reason or "refused",
                    )
                )
                counts["quarantined"] += 1
            else:
                counts["duplicate"] += 1
        # ignore_conflicts: another worker ingesting overlapping paths may have stored the same
        # file a moment ago; it is then a duplicate for this batch, not an error.
        Image.objects.bulk_create(fresh, ignore_conflicts=True)
        if near:
            targets = {r.duplicate_of for r in near if r.duplicate_of}
            ids = dict(Image.objects.filter(sha256__in=targets).values_list("sha256", "id"))
            Image.objects.bulk_create(
                [
                    self._image_row(
                        r,
                        status=DUPLICATE,
                        storage_key="",
                        duplicate_of_id=ids.get(r.duplicate_of or ""),
                    )
                    for r in near
                ],
                ignore_conflicts=True,
            )
        owners: dict[str, int | None] = {}
        if fresh or near:
            owners = dict(
                Image.objects.filter(
                    sha256__in=[i.sha256 for i in fresh] + [r.sha256 for r in near]
                ).values_list("sha256", "batch_id")
            )
        for at, (result, outcome) in enumerate(chunk):
            if outcome in ("ingested", "near_duplicate"):
                if owners.get(result.sha256 or "") != batch.pk:
                    outcome = "duplicate"
                    chunk[at] = (result, outcome)
                counts[outcome] += 1
        Refusal.objects.bulk_create(refusals, ignore_conflicts=True)
        return counts

    def _image_row(self, result: IngestResult, **fields: Any) -> Image:
        image = result.image
        assert image is not None and result.sha256 is not None
        return Image(
            sha256=result.sha256,
            phash=image.phash,
            width=image.width,
            height=image.height,
            format=image.source_format,
            has_alpha=image.has_alpha,
            source=self.batch.source,
            batch=self.batch,
            origin=_clip(result.origin),
            caption=result.caption or "",
            **fields,
        )


def _settled_files(batch: IngestBatch) -> tuple[set[tuple[str, str]], set[str]]:
    """(origin, sha256) of every file this batch settled, and the URLs among them."""
    files = set(
        BatchFile.objects.filter(batch=batch).values_list("origin", "sha256").iterator(10_000)
    )
    urls = {origin for origin, _ in files if _is_url(origin)}
    return files, urls


def run_ingest(
    paths: Sequence[str | Path] | None,
    source_name: str | None,
    *,
    job_ctx: JobContext | None = None,
    user: Any = None,
    batch: IngestBatch | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_progress: ProgressFn | None = None,
    near_distance: int = DEFAULT_NEAR_DISTANCE,
    workers: int | None = None,
) -> IngestBatch:
    """Ingest `paths` into source `source_name`, or resume `batch` where it stopped.

    A bad file never stops the batch: it becomes a Refusal. The batch ends `done`, or
    `cancelled` when `should_cancel` (or the job's cancel flag) said stop; run it again with
    `batch=` to finish it. `on_progress(settled, total)` drives a CLI progress bar.

    Resuming skips the files the batch has settled, by place and content: a local file or
    archive member whose bytes are unchanged is skipped after hashing (a changed one is
    ingested anew); a URL is skipped by its address alone, so nothing is downloaded twice.
    """
    if batch is None:
        if not source_name:
            raise ValueError("give a source name (--source) for a new ingest")
        batch = create_batch(paths or [], source_name, user=user)
    elif paths and normalise_paths(paths) != batch.paths:
        raise ValueError(f"{batch} was made for {batch.paths}, not {list(paths)}")
    batch.refresh_from_db()
    if batch.status == IngestBatch.Status.DONE:
        return batch
    if batch.total is None:
        batch.total = count_items(batch.paths)
    with transaction.atomic():
        if job_ctx is not None:
            job_ctx.fence()
            if batch.job_id is None:
                batch.job = job_ctx.job
        batch.status = IngestBatch.Status.RUNNING
        batch.finished_at = None
        batch.save(update_fields=["status", "finished_at", "total", "job", "updated_at"])
    if job_ctx is not None:
        job_ctx.save_state(batch_id=batch.pk, position=batch.position)
        job_ctx.log(f"ingesting {batch.paths}; {batch.position} files settled before")

    def cancel_requested() -> bool:
        return bool(
            (job_ctx is not None and job_ctx.should_cancel())
            or (should_cancel is not None and should_cancel())
        )

    files, urls = _settled_files(batch)
    persister = _Persister(batch, total=batch.total, job_ctx=job_ctx, on_progress=on_progress)
    items = (item for item in _items(batch.paths) if _clip(item.origin) not in urls)
    near_index, known = load_pool_state()
    try:
        summary = ingest_items(
            items,
            already_seen=known,
            on_result=persister.on_result,
            should_cancel=cancel_requested,
            near_index=near_index,
            near_distance=near_distance,
            workers=workers,
            refused_before=refused_before(),
            settled=(lambda origin, sha256: (_clip(origin), sha256) in files) if files else None,
        )
        persister.commit()
    except AttemptStopped:
        raise  # superseded: the batch belongs to the attempt that replaced this one
    except BaseException:
        with contextlib.suppress(Exception):
            persister.commit()  # keep what was settled; the rest is redone on resume
        IngestBatch.objects.filter(pk=batch.pk, status=IngestBatch.Status.RUNNING).update(
            status=IngestBatch.Status.FAILED, updated_at=timezone.now()
        )
        raise
    finally:
        persister.close()
    status = IngestBatch.Status.CANCELLED if summary.cancelled else IngestBatch.Status.DONE
    with transaction.atomic():
        if job_ctx is not None:
            job_ctx.fence()  # a superseded attempt leaves the batch to the one that replaced it
        IngestBatch.objects.filter(pk=batch.pk).update(
            status=status,
            finished_at=timezone.now() if status == IngestBatch.Status.DONE else None,
            updated_at=timezone.now(),
        )
    batch.refresh_from_db()
    if job_ctx is not None:
        job_ctx.log(
            f"{batch.get_status_display()}: {batch.ingested} ingested, {batch.duplicates} "
            f"duplicate, {batch.near_duplicates} near-duplicate, {batch.quarantined} refused"
        )
    return batch


def demo_ingest_pool(pool: Path | None = None, source: str = DEMO_SOURCE) -> IngestBatch:
    """Ingest `pool` (default fixtures/pool; the demo gives the toy world's pool manifest) as
    `source` once; later calls return that batch."""
    done = IngestBatch.objects.filter(source__name=source, status=IngestBatch.Status.DONE).first()
    if done is not None:
        return done
    pool = pool or Path(settings.BASE_DIR) / "fixtures" / "pool"
    unfinished = IngestBatch.objects.filter(source__name=source, job__isnull=True).first()
    if unfinished is not None:
        return run_ingest(None, None, batch=unfinished)
    return run_ingest([pool], source)
