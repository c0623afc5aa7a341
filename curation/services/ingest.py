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
    ingest_items,
    iter_items,
)
from curation.ingestion.pipeline import DEFAULT_NEAR_DISTANCE
from curation.models import Image, IngestBatch, Refusal, Source
from curation.services.jobs import JobCancelled, JobContext, enqueue_job
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


class _Persister:
    """Buffers results until they form a prefix of the input, then commits them in chunks."""

    def __init__(
        self,
        batch: IngestBatch,
        *,
        offset: int,
        total: int | None,
        job_ctx: JobContext | None,
        on_progress: ProgressFn | None,
    ) -> None:
        self.batch = batch
        self.offset = offset
        self.total = total
        self.job_ctx = job_ctx
        self.on_progress = on_progress
        self.next = offset
        self.out_of_order: dict[int, IngestResult] = {}
        self.ready: list[IngestResult] = []
        self.last_commit = time.monotonic()
        self.seen_count = offset
        self.broken = False
        # Storage writes start as soon as a result arrives, in threads (file and network I/O
        # release the GIL), so the commit only waits for them instead of doing them in turn.
        self.writer = ThreadPoolExecutor(STORAGE_THREADS, thread_name_prefix="ingest-store")
        self.stored: dict[str, Future[str]] = {}

    def on_result(self, result: IngestResult) -> None:
        self.out_of_order[self.offset + result.position] = result
        if result.status == "ingested" and result.image is not None:
            image = result.image
            self.stored[image.sha256] = self.writer.submit(
                store_bytes, image.data, image.extension, sha256=image.stored_sha256
            )
        while self.next in self.out_of_order:
            self.ready.append(self.out_of_order.pop(self.next))
            self.next += 1
        self.seen_count += 1
        if self.on_progress is not None:
            self.on_progress(self.seen_count, self.total)
        if len(self.ready) >= COMMIT_EVERY or (
            self.ready and time.monotonic() - self.last_commit >= COMMIT_SECONDS
        ):
            self.commit()

    def commit(self) -> None:
        if not self.ready or self.broken:
            return
        chunk = self.ready
        position = self.batch.position + len(chunk)
        try:
            with transaction.atomic():
                counts = self._persist(chunk)
                IngestBatch.objects.filter(pk=self.batch.pk).update(
                    position=position,
                    ingested=F("ingested") + counts["ingested"],
                    duplicates=F("duplicates") + counts["duplicate"],
                    near_duplicates=F("near_duplicates") + counts["near_duplicate"],
                    quarantined=F("quarantined") + counts["quarantined"],
                    updated_at=timezone.now(),
                )
                if self.job_ctx is not None:
                    self.job_ctx.save_state(batch_id=self.batch.pk, position=position)
        except BaseException:
            # Later results must not be committed past a hole: the position would lie.
            self.broken = True
            raise
        self.ready = []
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

    def _persist(self, chunk: list[IngestResult]) -> dict[str, int]:
        counts = {"ingested": 0, "duplicate": 0, "near_duplicate": 0, "quarantined": 0}
        batch = self.batch
        fresh: list[Image] = []
        near: list[IngestResult] = []
        refusals: list[Refusal] = []
        for result in chunk:
            if result.status == "ingested":
                image = result.image
                assert image is not None and result.sha256 is not None
                key = self.stored.pop(image.sha256).result()
                fresh.append(self._image_row(result, status=OK, storage_key=key))
            elif result.status == "near_duplicate":
                near.append(result)
            elif result.status == "quarantined":
                refusals.append(
                    Refusal(
                        batch=batch,
                        origin=result.origin[:ORIGIN_MAX],
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
        if fresh or near:
            owners = dict(
                Image.objects.filter(
                    sha256__in=[i.sha256 for i in fresh] + [r.sha256 for r in near]
                ).values_list("sha256", "batch_id")
            )
            for sha256, status in [(i.sha256, "ingested") for i in fresh] + [
                (r.sha256, "near_duplicate") for r in near
            ]:
                counts[status if owners.get(sha256) == batch.pk else "duplicate"] += 1
        Refusal.objects.bulk_create(refusals)
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
            origin=result.origin[:ORIGIN_MAX],
            caption=result.caption or "",
            **fields,
        )


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
    if job_ctx is not None and batch.job_id is None:
        batch.job = job_ctx.job
    batch.status = IngestBatch.Status.RUNNING
    batch.finished_at = None
    if batch.total is None:
        batch.total = count_items(batch.paths)
    batch.save(update_fields=["status", "finished_at", "total", "job", "updated_at"])
    if job_ctx is not None:
        job_ctx.save_state(batch_id=batch.pk, position=batch.position)
        job_ctx.log(f"ingesting {batch.paths} from item {batch.position}")

    def cancel_requested() -> bool:
        return bool(
            (job_ctx is not None and job_ctx.should_cancel())
            or (should_cancel is not None and should_cancel())
        )

    persister = _Persister(
        batch, offset=batch.position, total=batch.total, job_ctx=job_ctx, on_progress=on_progress
    )
    items = _items(batch.paths)
    for _ in range(batch.position):  # settled by an earlier run: skip without reading
        if next(items, None) is None:
            break

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
        )
        persister.commit()
    except BaseException:
        persister.commit()  # keep what was settled; the rest is redone on resume
        IngestBatch.objects.filter(pk=batch.pk).update(
            status=IngestBatch.Status.FAILED, updated_at=timezone.now()
        )
        raise
    finally:
        persister.close()
    status = IngestBatch.Status.CANCELLED if summary.cancelled else IngestBatch.Status.DONE
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


def demo_ingest_pool() -> IngestBatch:
    """Ingest fixtures/pool as source `demo-pool` once; later calls return that batch."""
    done = IngestBatch.objects.filter(
        source__name=DEMO_SOURCE, status=IngestBatch.Status.DONE
    ).first()
    if done is not None:
        return done
    pool = Path(settings.BASE_DIR) / "fixtures" / "pool"
    unfinished = IngestBatch.objects.filter(source__name=DEMO_SOURCE, job__isnull=True).first()
    if unfinished is not None:
        return run_ingest(None, None, batch=unfinished)
    return run_ingest([pool], DEMO_SOURCE)
