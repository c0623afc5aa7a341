"""What deleting a row would take with it: the API refuses deletes that reach the record.

Rounds, their tasks, annotations (and their history), judgements and frozen versions are the
platform's record of what people said and what was trained on. Deleting anything whose cascade
reaches one of them (a generation batch whose generations were rated, an image a task shows)
is refused with the reason, whoever asks; such rows are archived instead where that exists.
"""

from __future__ import annotations

from collections import Counter

from django.db import router
from django.db.models import Model
from django.db.models.deletion import Collector, ProtectedError, RestrictedError

# Labels of the models that are never deleted through the API, directly or by cascade.
RECORD_MODELS = frozenset(
    {
        "curation.annotationround",
        "curation.labeltask",
        "curation.annotation",
        "curation.annotationversion",
        "curation.judgement",
        "curation.annotatorroundstats",
        "curation.webhookevent",
        "curation.golditem",
        "curation.roundnotice",
    }
)


def _label(model: type[Model]) -> str:
    return model._meta.label_lower


def _is_record(obj: Model) -> bool:
    label = _label(type(obj))
    if label == "curation.datasetversion":
        return bool(getattr(obj, "is_frozen", False))
    return label in RECORD_MODELS


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))


def deletion_blocker(obj: Model) -> str | None:
    """Why `obj` may not be deleted (None when nothing of the record would go with it)."""
    if _is_record(obj):
        return f"{obj._meta.verbose_name} rows are part of the annotation record and never deleted"
    collector = Collector(using=router.db_for_write(type(obj)), origin=obj)
    try:
        collector.collect([obj])
    except (ProtectedError, RestrictedError) as exc:
        blocked = (
            exc.protected_objects if isinstance(exc, ProtectedError) else exc.restricted_objects
        )
        counts = Counter(str(o._meta.verbose_name) for o in blocked)
        return f"it is still used by {_describe(counts)}"
    counts: Counter[str] = Counter()
    for model, instances in collector.data.items():
        for instance in instances:
            if _is_record(instance):
                counts[str(model._meta.verbose_name)] += 1
    for queryset in collector.fast_deletes:
        if _label(queryset.model) in RECORD_MODELS:
            n = queryset.count()
            if n:
                counts[str(queryset.model._meta.verbose_name)] += n
    if counts:
        return f"deleting it would delete {_describe(counts)}"
    return None
