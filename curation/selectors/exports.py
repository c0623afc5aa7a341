"""Reads for export pages: the downloadable archives of a version's finished exports."""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage

from curation.models import DatasetVersion, Job


def version_downloads(version: DatasetVersion) -> list[dict[str, Any]]:
    """The newest finished export per format, with its archive's storage key, if it still exists."""
    found: dict[str, dict[str, Any]] = {}
    jobs = Job.objects.filter(
        kind="export_version",
        status=Job.Status.SUCCEEDED,
        target_type=DatasetVersion._meta.label_lower,
        target_id=version.pk,
    ).order_by("-id")
    for job in jobs.only("id", "result", "finished_at"):
        for fmt, result in (job.result or {}).get("exports", {}).items():
            key = result.get("download") if isinstance(result, dict) else None
            if fmt in found or not key or not default_storage.exists(key):
                continue
            found[fmt] = {
                "format": fmt,
                "key": key,
                "rows": result.get("rows"),
                "job": job.pk,
                "finished_at": job.finished_at,
            }
    return [found[f] for f in sorted(found)]
