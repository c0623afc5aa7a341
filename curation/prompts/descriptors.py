"""Named style descriptors (prefix/suffix) applied to prompts per run.

The prompt-engineered base arm ("..., sticker, die-cut, white border, flat colours") and StyleDrop's
style descriptor are data a run records, not code. Applying one is idempotent: a prompt that already
carries the descriptor (case, spacing and a trailing full stop or comma aside) is left alone, so
re-running a generation batch, or applying a descriptor to prompts imported with it, never stacks
"sticker, sticker, ...".
"""

from __future__ import annotations

from dataclasses import dataclass

_TAIL = " ,;."
_HEAD = " ,;"


@dataclass(frozen=True)
class StyleDescriptor:
    name: str
    prefix: str = ""
    suffix: str = ""
    prefix_joiner: str = " "
    suffix_joiner: str = ", "

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a style descriptor needs a name")
        if not (self.prefix.strip() or self.suffix.strip()):
            raise ValueError(f"style descriptor {self.name!r} has neither prefix nor suffix")
        object.__setattr__(self, "prefix", " ".join(self.prefix.split()).strip(_HEAD))
        object.__setattr__(self, "suffix", " ".join(self.suffix.split()).strip(_HEAD))

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "suffix": self.suffix,
            "prefix_joiner": self.prefix_joiner,
            "suffix_joiner": self.suffix_joiner,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> StyleDescriptor:
        return cls(**data)


PRESETS: dict[str, StyleDescriptor] = {
    d.name: d
    for d in (
        StyleDescriptor("sticker", suffix="sticker, die-cut, white border, flat colours"),
        StyleDescriptor("sticker_of", prefix="a sticker of"),
        StyleDescriptor("styledrop_sticker", suffix="in sticker style", suffix_joiner=" "),
    )
}


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _has_suffix(text: str, suffix: str) -> bool:
    body, tail = _norm(text).rstrip(_TAIL), _norm(suffix).rstrip(_TAIL)
    if not body.endswith(tail):
        return False
    return len(body) == len(tail) or not body[-len(tail) - 1].isalnum()


def _has_prefix(text: str, prefix: str) -> bool:
    body, head = _norm(text).lstrip(_HEAD), _norm(prefix)
    if not body.startswith(head):
        return False
    return len(body) == len(head) or not body[len(head)].isalnum()


def apply_descriptor(prompt: str, descriptor: StyleDescriptor) -> str:
    """The prompt with the descriptor's prefix and suffix, each added only if not already there."""
    text = " ".join(prompt.split())
    if descriptor.prefix and not _has_prefix(text, descriptor.prefix):
        text = f"{descriptor.prefix}{descriptor.prefix_joiner}{text.lstrip(_HEAD)}".strip()
    if descriptor.suffix and not _has_suffix(text, descriptor.suffix):
        body = text.rstrip(_TAIL)
        text = f"{body}{descriptor.suffix_joiner}{descriptor.suffix}" if body else descriptor.suffix
    return text


def remove_descriptor(prompt: str, descriptor: StyleDescriptor) -> str:
    """The base prompt back, for comparing arms that used different descriptors."""
    text = " ".join(prompt.split())
    if descriptor.suffix and _has_suffix(text, descriptor.suffix):
        text = text.rstrip(_TAIL)
        text = text[: len(text) - len(descriptor.suffix.rstrip(_TAIL))].rstrip(_TAIL)
    if descriptor.prefix and _has_prefix(text, descriptor.prefix):
        text = text.lstrip(_HEAD)[len(descriptor.prefix) :].lstrip(_HEAD)
    return text
