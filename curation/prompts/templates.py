"""Template grammar for scene-diverse prompt sets: `{subject} {action} {setting}, {emotion}`.

Each slot has a value list with weights. Weights only steer sampling; exhaustive expansion takes every
combination once. Every expanded prompt keeps the values that made it, so evaluation results can be
broken down by subject, action or emotion later without re-parsing the text.

Sampling is without replacement where the space allows it, via Gumbel-top-k over the combinations'
log-probabilities (equivalent to drawing one at a time proportionally to weight and never drawing a
combination twice). Spaces too large to enumerate fall back to weighted draws with rejection of
repeats, which is cheap exactly when the space is large. Both use one seeded NumPy generator, so a seed
fixes the result.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ValueSpec = str | tuple[str, float] | list

# Above this many combinations we stop enumerating them for sampling and use rejection instead.
ENUMERATE_LIMIT = 2_000_000
EXPAND_LIMIT = 1_000_000
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_REPEATED_COMMAS = re.compile(r",(\s*,)+")


class TemplateError(ValueError):
    """A template or value list that cannot be expanded; the message names the slot and value."""


@dataclass(frozen=True)
class WeightedValue:
    value: str
    weight: float = 1.0


@dataclass(frozen=True)
class ExpandedPrompt:
    text: str
    slots: Mapping[str, str]


def parse_value(spec: ValueSpec, slot: str) -> WeightedValue:
    """Accept "value", "value:weight" or (value, weight).

    Only a number after the last ':' is a weight, so "text: hello" stays text; a value that itself
    ends in ':<number>' (a clock reading "10:30") needs an explicit weight: "10:30:1" or a tuple.
    """
    if isinstance(spec, WeightedValue):
        value, weight = spec.value, spec.weight
    elif isinstance(spec, str):
        value, weight = spec, 1.0
        head, sep, tail = spec.rpartition(":")
        if sep:
            try:
                weight = float(tail)
            except ValueError:
                pass
            else:
                value = head
    elif isinstance(spec, tuple | list) and len(spec) == 2 and isinstance(spec[0], str):
        value = spec[0]
        try:
            weight = float(spec[1])
        except (TypeError, ValueError):
            raise TemplateError(
                f"slot {slot!r}: weight {spec[1]!r} of value {spec[0]!r} is not a number"
            ) from None
    else:
        raise TemplateError(
            f"slot {slot!r}: value {spec!r} must be a string, 'value:weight' or (value, weight)"
        )
    if not math.isfinite(weight) or weight < 0:
        raise TemplateError(
            f"slot {slot!r}: value {value!r} has weight {weight}; weights must be finite and >= 0"
        )
    return WeightedValue(value.strip(), weight)


def _slot_names(pattern: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise TemplateError(
            f"template {pattern!r}: {exc} (write '{{{{' for a literal brace)"
        ) from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(
                f"template {pattern!r}: slot {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} must be a plain name such as {{subject}}"
            )
        if name not in names:
            names.append(name)
    return names


class PromptTemplate:
    """One pattern plus its slots' weighted value lists; immutable once built."""

    def __init__(self, pattern: str, values: Mapping[str, Iterable[ValueSpec]]) -> None:
        self.pattern = pattern
        self.slot_names: tuple[str, ...] = tuple(_slot_names(pattern))
        if not self.slot_names:
            raise TemplateError(f"template {pattern!r} has no {{slot}} to expand")
        unknown = [name for name in self.slot_names if name not in values]
        if unknown:
            raise TemplateError(
                f"template {pattern!r} uses slot(s) {', '.join(unknown)} with no value list "
                f"(lists given: {', '.join(sorted(values)) or 'none'})"
            )
        self.values: dict[str, tuple[WeightedValue, ...]] = {}
        for name in self.slot_names:
            parsed = tuple(parse_value(spec, name) for spec in values[name])
            if not parsed:
                raise TemplateError(f"slot {name!r} has an empty value list")
            repeated = [v for v, c in Counter(p.value for p in parsed).items() if c > 1]
            if repeated:
                raise TemplateError(f"slot {name!r} lists {repeated[0]!r} more than once")
            if not any(p.weight > 0 for p in parsed):
                raise TemplateError(f"slot {name!r}: every weight is zero, nothing can be sampled")
            self.values[name] = parsed
        self._probs = [self._probabilities(name) for name in self.slot_names]

    def _probabilities(self, name: str) -> np.ndarray:
        weights = np.array([v.weight for v in self.values[name]], dtype=np.float64)
        return weights / weights.sum()

    @property
    def size(self) -> int:
        """Number of distinct prompts exhaustive expansion yields (product of the list sizes)."""
        return math.prod(len(self.values[name]) for name in self.slot_names)

    @property
    def positive_size(self) -> int:
        """Combinations with non-zero probability: the most a unique sample can hold."""
        return math.prod(int((p > 0).sum()) for p in self._probs)

    def render(self, choice: Sequence[int]) -> ExpandedPrompt:
        slots = {
            name: self.values[name][index].value
            for name, index in zip(self.slot_names, choice, strict=True)
        }
        text = self.pattern.format_map(slots)
        # Empty values (optional slots) would leave "a cat  , happy" behind; tidy the seams.
        text = " ".join(text.split())
        text = _REPEATED_COMMAS.sub(",", _SPACE_BEFORE_PUNCT.sub(r"\1", text)).strip(" ,;")
        return ExpandedPrompt(text=text, slots=slots)

    def expand(self, limit: int = EXPAND_LIMIT) -> list[ExpandedPrompt]:
        """Every combination once, last slot varying fastest (itertools.product order)."""
        if self.size > limit:
            raise TemplateError(
                f"template {self.pattern!r} expands to {self.size:,} prompts, over the limit of "
                f"{limit:,}; sample a number of them instead"
            )
        sizes = [len(self.values[name]) for name in self.slot_names]
        grid = np.indices(sizes).reshape(len(sizes), -1).T
        return [self.render(row.tolist()) for row in grid]

    def sample(self, n: int, *, seed: int, unique: bool = True) -> list[ExpandedPrompt]:
        """`n` prompts drawn by weight; with `unique`, repeats appear only once the space is used up.

        When `n` exceeds the combinations with non-zero weight, every such combination appears once
        and the remainder are weighted draws with replacement.
        """
        if n < 0:
            raise TemplateError(f"cannot sample {n} prompts")
        rng = np.random.default_rng(seed)
        if not unique:
            return [self.render(row) for row in self._draw(rng, n)]
        take = min(n, self.positive_size)
        if self.size <= ENUMERATE_LIMIT:
            rows = self._gumbel_top_k(rng, take)
        else:
            rows = self._rejection(rng, take)
        if n > take:
            rows = np.concatenate([rows, self._draw(rng, n - take)])
        return [self.render(row) for row in rows]

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        columns = [rng.choice(len(p), size=n, p=p) for p in self._probs]
        return np.stack(columns, axis=1) if columns else np.empty((n, 0), dtype=np.int64)

    def _gumbel_top_k(self, rng: np.random.Generator, k: int) -> np.ndarray:
        sizes = [len(p) for p in self._probs]
        with np.errstate(divide="ignore"):
            log_p = np.zeros(1)
            for p in self._probs:
                log_p = np.add.outer(log_p, np.log(p)).ravel()
        keys = log_p + rng.gumbel(size=log_p.size)
        if k == 0:
            return np.empty((0, len(sizes)), dtype=np.int64)
        top = np.argpartition(-keys, k - 1)[:k]
        top = top[np.argsort(-keys[top], kind="stable")]
        return np.stack(np.unravel_index(top, sizes), axis=1)

    def _rejection(self, rng: np.random.Generator, k: int) -> np.ndarray:
        seen: dict[tuple[int, ...], None] = {}
        while len(seen) < k:
            for row in self._draw(rng, max(1024, 2 * (k - len(seen)))):
                seen.setdefault(tuple(int(i) for i in row), None)
                if len(seen) == k:
                    break
        return np.array(list(seen), dtype=np.int64).reshape(k, len(self._probs))


def breakdown(prompts: Iterable[ExpandedPrompt], slot: str) -> Counter[str]:
    """How many prompts carry each value of `slot`, for per-subject/action/emotion reports."""
    return Counter(p.slots[slot] for p in prompts if slot in p.slots)
