"""Validation of a recipe's editable fields, shared by the model's clean() and the services.

Django-free: it reads attributes, so the model can call it without importing a service.
"""

from __future__ import annotations

from typing import Any

from curation.weak.labelling_functions import lf_from_config


def _query_errors(value: Any, field: str) -> str | None:
    if not isinstance(value, list):
        return f'{field}: expected a JSON list like [{{"text": "a sticker", "weight": 1.0}}]'
    for n, item in enumerate(value, start=1):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            return f"{field}: item {n} must be an object {{text, weight}} or a string"
        unknown = sorted(set(item) - {"text", "weight"})
        if unknown:
            return f"{field}: item {n} has unknown key(s) {unknown}; allowed: text, weight"
        if not isinstance(item.get("text"), str) or not item["text"].strip():
            return f'{field}: item {n} needs a non-empty "text"'
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            return f"{field}: item {n} weight must be a positive number, got {weight!r}"
    return None


def recipe_field_errors(recipe: Any) -> dict[str, str]:
    """Field name → what is wrong, for every invalid field of a Recipe (empty when valid).

    `recipe` is anything with the Recipe fields as attributes (the model row in practice).
    """
    errors: dict[str, str] = {}
    for field in ("text_queries", "negative_queries"):
        problem = _query_errors(getattr(recipe, field), field)
        if problem:
            errors[field] = problem
    lfs = recipe.labelling_functions
    if not isinstance(lfs, list):
        errors["labelling_functions"] = (
            'labelling_functions: expected a JSON list like [{"kind": "transparent_background"}]'
        )
    else:
        names = []
        for n, config in enumerate(lfs, start=1):
            if not isinstance(config, dict):
                errors["labelling_functions"] = f"labelling_functions: item {n} must be an object"
                break
            try:
                names.append(lf_from_config(config).name)
            except (TypeError, ValueError) as exc:
                errors["labelling_functions"] = f"labelling_functions: item {n}: {exc}"
                break
        else:
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                errors["labelling_functions"] = (
                    f"labelling_functions: names must be unique, repeated: {duplicates}"
                )
    if recipe.threshold is None or not 0.0 <= float(recipe.threshold) <= 1.0:
        errors["threshold"] = f"threshold: must lie in [0, 1], got {recipe.threshold}"
    if not recipe.top_k:
        errors["top_k"] = "top_k: must be at least 1"
    return errors
