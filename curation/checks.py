"""System checks for settings whose values only make sense together."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def job_timing_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A run must give up on heartbeats before the scheduler declares it lost.

    Otherwise a run that cannot reach the database keeps working while the scheduler already
    started its next attempt: two attempts would be live at once (fencing still refuses the old
    one's writes, but its work is wasted and its side effects outside the database are not).
    """
    give_up = settings.JOB_HEARTBEAT_GIVE_UP_SECONDS
    stale = settings.JOB_STALE_AFTER.total_seconds()
    errors = []
    if give_up >= stale:
        errors.append(
            Error(
                f"JOB_HEARTBEAT_GIVE_UP_SECONDS ({give_up:g}) must be below "
                f"JOB_STALE_AFTER_SECONDS ({stale:g})",
                hint="A run must stop itself before the scheduler starts its next attempt; "
                "leave JOB_HEARTBEAT_GIVE_UP_SECONDS unset to use half of JOB_STALE_AFTER_SECONDS.",
                id="curation.E001",
            )
        )
    return errors
