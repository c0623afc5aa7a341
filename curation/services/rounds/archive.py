"""Archiving a round: hidden from lists, nothing deleted."""

from __future__ import annotations

from curation.models import AnnotationRound


def set_archived(round_: AnnotationRound, archived: bool) -> AnnotationRound:
    """Hide a round from lists (or show it again); nothing of it is deleted."""
    AnnotationRound.objects.filter(pk=round_.pk).update(archived=archived)
    round_.refresh_from_db()
    return round_
