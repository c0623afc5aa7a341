"""Reads about ingest batches: the summary the `ingest` command and the job report."""

from __future__ import annotations

from typing import Any

from curation.models import IngestBatch


def ingest_summary(batch: IngestBatch, *, max_refusals: int | None = None) -> dict[str, Any]:
    """`{counts, refusals: [{path, reason}], batch, status}` as the `ingest --json` contract says.

    `max_refusals` caps the list where it is stored (a job result) rather than printed.
    """
    refusals = batch.refusals.order_by("id").values_list("origin", "reason")
    if max_refusals is not None:
        refusals = refusals[:max_refusals]
    return {
        "counts": {
            "ingested": batch.ingested,
            "duplicate": batch.duplicates,
            "near_duplicate": batch.near_duplicates,
            "quarantined": batch.quarantined,
        },
        "refusals": [{"path": path, "reason": reason} for path, reason in refusals],
        "batch": batch.pk,
        "status": batch.status,
    }
