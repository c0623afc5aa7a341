"""Five-field cron expressions (UTC): validity and the next run after a moment."""

from __future__ import annotations

from datetime import datetime

from croniter import croniter


def cron_error(expression: str) -> str | None:
    """Why `expression` is not a usable five-field cron expression, or None when it is."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        return f"{expression!r} is not a five-field cron expression (minute hour day month weekday)"
    if not croniter.is_valid(expression):
        return f"{expression!r} is not a valid cron expression"
    return None


def next_run_after(expression: str, moment: datetime) -> datetime:
    return croniter(expression, moment).get_next(datetime)
