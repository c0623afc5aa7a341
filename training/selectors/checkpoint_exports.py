"""Reads for a checkpoint's exports: the finished ones a browser can download, and the jobs
that made (or are making, or failed to make) them.

The record of an export is its `export_checkpoint` Job (target = the checkpoint): `params`
say what was asked (format, EMA or raw weights), `result` what was written and where the zip
is, as the dataset exports do (curation.selectors.exports).
"""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from django.db.models import QuerySet

from curation.models import Job
from training.models import Checkpoint

JOB_KIND = "export_checkpoint"


def export_jobs(checkpoint: Checkpoint) -> QuerySet[Job]:
    """Every export job of `checkpoint`, newest first."""
    return _jobs_of(checkpoint.pk)


def _jobs_of(checkpoint_id: int) -> QuerySet[Job]:
    return Job.objects.filter(
        kind=JOB_KIND, target_type=Checkpoint._meta.label_lower, target_id=checkpoint_id
    ).order_by("-id")


def has_active_export(checkpoint_id: int) -> bool:
    return _jobs_of(checkpoint_id).filter(status__in=Job.ACTIVE).exists()


def variant_jobs(checkpoint: Checkpoint, fmt: str, use_ema: bool) -> QuerySet[Job]:
    """The export jobs of `checkpoint` that asked for `fmt` with (or without) EMA weights."""
    return export_jobs(checkpoint).filter(params__format=fmt, params__use_ema=use_ema)


def finished_export(checkpoint: Checkpoint, fmt: str, use_ema: bool) -> Job | None:
    """The newest succeeded export of this variant whose zip is still in storage."""
    for job in variant_jobs(checkpoint, fmt, use_ema).filter(status=Job.Status.SUCCEEDED):
        key = (job.result or {}).get("download")
        if key and default_storage.exists(key):
            return job
    return None


def active_export(checkpoint: Checkpoint, fmt: str, use_ema: bool) -> Job | None:
    return variant_jobs(checkpoint, fmt, use_ema).filter(status__in=Job.ACTIVE).first()


def checkpoint_downloads(checkpoint: Checkpoint) -> list[dict[str, Any]]:
    """The newest finished export per (format, weights), each with its zip's storage key and
    what it holds; variants whose zip was removed from storage are left out."""
    found: dict[tuple[str, bool], dict[str, Any]] = {}
    jobs = export_jobs(checkpoint).filter(status=Job.Status.SUCCEEDED)
    for job in jobs.only("id", "params", "result", "finished_at"):
        result = job.result or {}
        variant = (job.params.get("format"), bool(job.params.get("use_ema", True)))
        key = result.get("download")
        if variant in found or not key or not default_storage.exists(key):
            continue
        found[variant] = {**result, "job": job.pk, "finished_at": job.finished_at}
    return [found[v] for v in sorted(found, key=lambda v: (v[0], not v[1]))]


def unfinished_exports(checkpoint: Checkpoint, shown: int = 5) -> list[Job]:
    """Export jobs still running or that ended without a download: their state and error are
    what the page shows; a failure older than a later success of its variant is left out."""
    succeeded: dict[tuple[str, bool], int] = {}
    for done in export_jobs(checkpoint).filter(status=Job.Status.SUCCEEDED).only("id", "params"):
        variant = (done.params.get("format"), bool(done.params.get("use_ema", True)))
        succeeded.setdefault(variant, done.pk)  # newest first
    jobs = []
    for job in export_jobs(checkpoint).exclude(status=Job.Status.SUCCEEDED)[: shown * 4]:
        variant = (job.params.get("format"), bool(job.params.get("use_ema", True)))
        if job.is_active or succeeded.get(variant, 0) < job.pk:
            jobs.append(job)
    return jobs[:shown]
