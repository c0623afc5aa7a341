"""Reads for retrain round pages: the timeline as plain data, for the page and its live refresh."""

from __future__ import annotations

from typing import Any

from training.models import RetrainRound, RoundStep

ACTIVE = (RoundStep.Status.PENDING, RoundStep.Status.RUNNING)


def round_timeline(round_: RetrainRound) -> dict[str, Any]:
    steps = list(round_.steps.select_related("job").order_by("position"))
    return {
        "round": round_.pk,
        "state": round_.state,
        "active": round_.state == RetrainRound.State.RUNNING
        and any(s.status in ACTIVE for s in steps),
        "steps": [
            {
                "name": s.name,
                "status": s.status,
                "job": s.job_id,
                "job_status": s.job.status if s.job else None,
                "percent": s.job.percent if s.job else 0.0,
                "message": s.job.progress_message if s.job else "",
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
                "seconds": s.seconds,
                "error": s.error,
            }
            for s in steps
        ],
    }
