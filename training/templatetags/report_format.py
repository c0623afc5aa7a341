"""Formatting of report numbers: intervals as [low, high], relative changes as signed percent."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def interval(value: Any, digits: int = 3) -> str:
    """[low, high] with `digits` decimals; an em dash where there is no interval."""
    if not value or len(value) != 2 or None in value:
        return "—"
    low, high = value
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


@register.filter
def percent(value: Any) -> str:
    """A relative change (0.14) as "+14.0 %"."""
    if value is None:
        return "—"
    return f"{value * 100:+.1f} %"


@register.filter
def percent_interval(value: Any) -> str:
    if not value or len(value) != 2 or None in value:
        return "—"
    return f"[{value[0] * 100:+.1f}, {value[1] * 100:+.1f}] %"


@register.filter
def get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None
