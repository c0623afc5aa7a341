"""Annotation `result` lists in the shape Label Studio's editor writes them, for our configs.

Used where the platform annotates through the API as a person would (the demo script, tests), so
those annotations go through exactly the parsing path of browser-made ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from curation.labelstudio import configs


def choice(name: str, values: str | Sequence[str], to_name: str = configs.IMAGE) -> dict[str, Any]:
    chosen = [values] if isinstance(values, str) else list(values)
    return {"from_name": name, "to_name": to_name, "type": "choices", "value": {"choices": chosen}}


def rating(name: str, value: int, to_name: str = configs.IMAGE) -> dict[str, Any]:
    if not 1 <= int(value) <= 5:
        raise ValueError(f"{name}: rating must be 1–5, got {value!r}")
    return {
        "from_name": name,
        "to_name": to_name,
        "type": "rating",
        "value": {"rating": int(value)},
    }


def alignment_result(
    aligned: bool, stars: int | None = None, issues: Sequence[str] = ()
) -> list[dict[str, Any]]:
    result = [choice(configs.ALIGNED, configs.YES if aligned else configs.NO)]
    if stars is not None:
        result.append(rating(configs.ALIGNMENT_RATING, stars))
    if issues:
        result.append(choice(configs.ISSUES, list(issues)))
    return result


def style_result(passed: bool, stars: int) -> list[dict[str, Any]]:
    return [
        choice(configs.STYLE_PASS, configs.PASS if passed else configs.FAIL),
        rating(configs.STYLE_RATING, stars),
    ]


def pairwise_result(preferred: str) -> list[dict[str, Any]]:
    """A, B or tie, as the pairwise config's required choice writes it."""
    if preferred not in configs.PAIRWISE_CHOICES:
        raise ValueError(
            f"preferred: expected one of {list(configs.PAIRWISE_CHOICES)}, got {preferred!r}"
        )
    return [choice(configs.PAIRWISE, preferred, to_name=configs.LEFT)]
