"""Writes for prompt sets: import, templated expansion, analysis, dedup, freeze, leak-free split.

Every import or expansion makes a new draft version of the named set (version = latest + 1, parent =
latest), so a prompt set evolves like a dataset and a frozen version is never edited in place. The
heavy lifting is Django-free in `curation.prompts`; this module maps it onto rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from curation.models.prompts import Prompt, PromptSet
from curation.prompts.dedup import DEFAULT_THRESHOLD
from curation.prompts.importers import (
    ImportResult,
    PromptImportError,
    RowError,
    detect_format,
    import_prompts,
    parse_prompts,
)
from curation.prompts.templates import PromptTemplate

LARGEST_GROUPS = 10
GROUP_TEXTS = 10
STORED_ERRORS = 200
EVAL_SUFFIX = "-eval"

Progress = Callable[[int, int], None]


class NothingImported(PromptImportError):
    """Every row was bad: no version is made, the row errors say why."""

    def __init__(self, source: str, errors: list[RowError]) -> None:
        self.errors = errors
        shown = "; ".join(str(e) for e in errors[:5])
        super().__init__(f"{source}: no usable prompt ({len(errors)} bad rows: {shown})")


def next_version(name: str) -> int:
    latest = PromptSet.objects.filter(name=name).aggregate(m=Max("version"))["m"]
    return (latest or 0) + 1


def _new_version(name: str, *, purpose: str, description: str, stats: dict) -> PromptSet:
    parent = PromptSet.objects.filter(name=name).order_by("-version").first()
    return PromptSet.objects.create(
        name=name,
        version=next_version(name),
        purpose=purpose,
        parent=parent,
        description=description,
        stats=stats,
    )


def _who(user: Any) -> str:
    return getattr(user, "username", "") or ""


def import_prompt_file(
    path_or_bytes: str | Path | bytes,
    name: str,
    *,
    fmt: str | None = None,
    purpose: str = PromptSet.Purpose.GENERATION,
    user: Any = None,
    filename: str | None = None,
    token_counter: Callable[[str], int] | None = None,
) -> tuple[PromptSet, list[RowError]]:
    """A new draft version of `name` holding the file's good rows; bad rows come back with lines.

    Uploaded bytes need `fmt` or a `filename` to tell the format from. Raises NothingImported when no
    row is usable, so an all-bad file never leaves an empty version behind.
    """
    if isinstance(path_or_bytes, bytes):
        source = filename or "<upload>"
        result: ImportResult = parse_prompts(
            path_or_bytes,
            fmt or detect_format(source),
            source=source,
            token_counter=token_counter,
        )
    else:
        result = import_prompts(path_or_bytes, fmt=fmt, token_counter=token_counter)
    if not result.prompts:
        raise NothingImported(result.source, result.errors)
    stats = {
        "import": {
            "source": result.source,
            "rows": len(result.prompts),
            "bad_rows": len({e.line for e in result.errors}),
            "errors": [str(e) for e in result.errors[:STORED_ERRORS]],
            "by": _who(user),
        }
    }
    with transaction.atomic():
        prompt_set = _new_version(
            name, purpose=purpose, description=f"imported from {result.source}", stats=stats
        )
        Prompt.objects.bulk_create(
            Prompt(
                prompt_set=prompt_set,
                text=row.text,
                category=row.category or "",
                subject=row.subject or "",
                tags=list(row.tags),
            )
            for row in result.prompts
        )
    return prompt_set, result.errors


def expand_template(
    name: str,
    pattern: str,
    slots: Mapping[str, Sequence[Any]],
    *,
    n: int | None = None,
    seed: int = 0,
    purpose: str = PromptSet.Purpose.GENERATION,
    user: Any = None,
    category: str = "",
) -> PromptSet:
    """A new draft version from a template: every combination, or `n` sampled under `seed`.

    Each prompt keeps the slot values that made it, so results break down by subject or emotion.
    TemplateError (a ValueError naming the slot) propagates for a bad template.
    """
    template = PromptTemplate(pattern, slots)
    expanded = template.expand() if n is None else template.sample(n, seed=seed)
    stats = {
        "template": {
            "pattern": pattern,
            "n": n,
            "seed": seed,
            "combinations": template.size,
            "by": _who(user),
        }
    }
    with transaction.atomic():
        prompt_set = _new_version(
            name, purpose=purpose, description=f"expanded from {pattern!r}", stats=stats
        )
        Prompt.objects.bulk_create(
            Prompt(
                prompt_set=prompt_set,
                text=p.text,
                category=category,
                subject=str(p.slots.get("subject", ""))[:120],
                slots=dict(p.slots),
            )
            for p in expanded
        )
    return prompt_set


def _embed(texts: list[str], on_progress: Progress | None) -> np.ndarray:
    from curation.prompts.embeddings import PromptEmbedder

    return PromptEmbedder().embed(texts, on_progress=on_progress)


def _model_id() -> str:
    from curation.prompts.embeddings import model_id

    return model_id()


def analyse_prompt_set(
    prompt_set: PromptSet,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    on_progress: Progress | None = None,
) -> dict:
    """Embed, group exact and near duplicates, measure diversity; results go to `stats`.

    Every prompt but the first of its group points at that first one via near_duplicate_of, which
    is what `remove_near_duplicates` drops. Analysis is derived data, so it may run on a frozen set.
    """
    from curation.prompts.dedup import diversity, find_duplicates

    rows = list(Prompt.objects.filter(prompt_set=prompt_set).values_list("pk", "text"))
    pks = [pk for pk, _ in rows]
    texts = [text for _, text in rows]
    vectors = _embed(texts, on_progress)
    report = find_duplicates(texts, vectors, threshold)
    spread = diversity(vectors) if texts else None
    with transaction.atomic():
        Prompt.objects.filter(prompt_set=prompt_set).exclude(near_duplicate_of=None).update(
            near_duplicate_of=None
        )
        for group in report.near_groups:
            Prompt.objects.filter(pk__in=[pks[i] for i in group[1:]]).update(
                near_duplicate_of=pks[group[0]]
            )
        analysis = {
            "analysed_at": timezone.now().isoformat(),
            "model": _model_id(),
            "threshold": threshold,
            "prompts": len(texts),
            "exact_groups": len(report.exact_groups),
            "near_groups": len(report.near_groups),
            "duplicates": len(report.drop),
            "diversity": asdict(spread) if spread else {},
            "largest_groups": [
                {"size": len(group), "texts": [texts[i] for i in group[:GROUP_TEXTS]]}
                for group in report.largest_groups(LARGEST_GROUPS)
            ],
        }
        stats = {**prompt_set.stats, "analysis": analysis}
        PromptSet.objects.filter(pk=prompt_set.pk).update(stats=stats)
    prompt_set.stats = stats
    return analysis


def remove_near_duplicates(prompt_set: PromptSet) -> int:
    """Delete the prompts the last analysis flagged (all but the first of each group); drafts only."""
    prompt_set.refresh_from_db()
    if prompt_set.frozen:
        raise ValueError(f"prompt set {prompt_set} is frozen; remove duplicates from a new version")
    if "analysis" not in prompt_set.stats:
        raise ValueError(f"prompt set {prompt_set} has not been analysed yet; run analyse first")
    with transaction.atomic():
        removed, _ = Prompt.objects.filter(
            prompt_set=prompt_set, near_duplicate_of__isnull=False
        ).delete()
        analysis = {**prompt_set.stats["analysis"], "removed": removed, "duplicates": 0}
        prompt_set.stats = {**prompt_set.stats, "analysis": analysis}
        PromptSet.objects.filter(pk=prompt_set.pk).update(stats=prompt_set.stats)
    return removed


def freeze_prompt_set(prompt_set: PromptSet, *, user: Any = None) -> PromptSet:
    """Make a draft immutable; refuses an already frozen or an empty set."""
    prompt_set.refresh_from_db()
    if prompt_set.frozen:
        raise ValueError(f"prompt set {prompt_set} is already frozen")
    if not prompt_set.prompts.exists():
        raise ValueError(f"prompt set {prompt_set} is empty; nothing to freeze")
    prompt_set.frozen = True
    prompt_set.stats = {
        **prompt_set.stats,
        "frozen": {"at": timezone.now().isoformat(), "by": _who(user)},
    }
    prompt_set.save(update_fields=["frozen", "stats", "updated_at"])
    return prompt_set


class SplitLeakError(RuntimeError):
    pass


def split_prompt_set(
    prompt_set: PromptSet,
    eval_fraction: float = 0.1,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    user: Any = None,
    on_progress: Progress | None = None,
) -> tuple[PromptSet, PromptSet]:
    """Two new frozen versions, children of `prompt_set`: generation under its name, evaluation under
    `<name>-eval`. Whole near-duplicate groups go to one side, and the result is re-checked with an
    exact cross-split search before anything is written."""
    from curation.prompts.splits import check_split_leaks, split_prompts

    prompts = list(Prompt.objects.filter(prompt_set=prompt_set))
    if len(prompts) < 2:
        raise ValueError(f"prompt set {prompt_set} has {len(prompts)} prompts; cannot split")
    vectors = _embed([p.text for p in prompts], on_progress)
    split = split_prompts(vectors, eval_fraction=eval_fraction, seed=seed, threshold=threshold)
    if not split.evaluation:
        raise ValueError(
            f"prompt set {prompt_set}: eval_fraction {eval_fraction} of {len(prompts)} prompts "
            "leaves no evaluation prompt"
        )
    leaks = check_split_leaks(vectors[split.generation], vectors[split.evaluation], threshold)
    if leaks:
        raise SplitLeakError(f"{len(leaks)} near-duplicate pairs cross the split of {prompt_set}")
    info = {
        "source": prompt_set.pk,
        "source_name": str(prompt_set),
        "eval_fraction": eval_fraction,
        "seed": seed,
        "threshold": threshold,
        "generation": len(split.generation),
        "evaluation": len(split.evaluation),
        "repaired_groups": split.repaired_groups,
        "leaks": 0,
        "by": _who(user),
    }
    halves = (
        (prompt_set.name, PromptSet.Purpose.GENERATION, split.generation),
        (prompt_set.name + EVAL_SUFFIX, PromptSet.Purpose.EVALUATION, split.evaluation),
    )
    made: list[PromptSet] = []
    with transaction.atomic():
        for name, purpose, indices in halves:
            half = PromptSet.objects.create(
                name=name,
                version=next_version(name),
                purpose=purpose,
                parent=prompt_set,
                description=f"{purpose} half of {prompt_set} (seed {seed}, threshold {threshold})",
                stats={"split": info},
            )
            Prompt.objects.bulk_create(
                Prompt(
                    prompt_set=half,
                    text=prompts[i].text,
                    category=prompts[i].category,
                    subject=prompts[i].subject,
                    tags=prompts[i].tags,
                    slots=prompts[i].slots,
                )
                for i in indices
            )
            made.append(freeze_prompt_set(half, user=user))
    return made[0], made[1]
