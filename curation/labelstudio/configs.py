"""Labeling-config XML for the platform's three Label Studio task kinds.

Control names here are the contract with `parsing.py`: a result item is recognised by its
`from_name`, so renaming a control means changing both (and breaks old rounds' annotations).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from xml.sax.saxutils import quoteattr

# Control names (from_name in results) and object names (to_name).
ALIGNED = "aligned"
ALIGNMENT_RATING = "alignment_rating"
ISSUES = "issues"
STYLE_PASS = "style_pass"
STYLE_RATING = "style_rating"
PAIRWISE = "preference"

IMAGE = "image"
PROMPT = "prompt"
EXEMPLARS = "exemplars"
LEFT = "left"
RIGHT = "right"

YES, NO = "yes", "no"
PASS, FAIL = "pass", "fail"
ISSUE_TAGS = ("missing object", "wrong count", "garbled text", "wrong attribute", "other")

# Task data keys each config reads ($name in the XML); push code must provide all of them.
ALIGNMENT_DATA_KEYS = (IMAGE, PROMPT)
STYLE_DATA_KEYS = (IMAGE, PROMPT)  # plus exemplar_keys(N) for a round with N exemplars
PAIRWISE_DATA_KEYS = ("image_a", "image_b", PROMPT)

TIE = "tie"
PAIRWISE_CHOICES = (LEFT, RIGHT, TIE)
# A style round shows up to this many of its exemplars (task data keys exemplar_1 … exemplar_N).
MAX_EXEMPLARS = 6


def exemplar_keys(count: int) -> tuple[str, ...]:
    return tuple(f"exemplar_{i}" for i in range(1, min(count, MAX_EXEMPLARS) + 1))


# Generated stickers are often RGBA: a checkerboard shows what is transparent instead of letting
# it blend into the page's white. Generations are small (32–64 px in tests and the demo): they are
# shown at a fixed width, upscaled without blurring (`smoothing="false"` and pixelated CSS).
_CHECKER = (
    "background-color: #fff;"
    " background-image: repeating-conic-gradient(#d9d9d9 0% 25%, #fff 0% 50%);"
    " background-size: 16px 16px;"
)
# Label Studio draws an <Image> on a Konva canvas (the <img> itself is clipped away), so the
# checkerboard goes on the stage's container, behind its transparent canvases.
_CSS = (
    f".checker .konvajs-content {{ {_CHECKER} }}"
    " .checker img { image-rendering: pixelated; }"
    " .pair { display: flex; gap: 16px; align-items: flex-start; }"
    " .pair > div { flex: 1 1 0; min-width: 0; }"
    " .exemplars { display: flex; gap: 12px; flex-wrap: wrap; }"
)


def _image(name: str, value: str, width: str) -> str:
    return (
        f'<Image name="{name}" value="${value}" width="{width}" maxWidth="{width}"'
        ' smoothing="false" zoomControl="false" rotateControl="false"/>'
    )


def _choices(
    name: str,
    to_name: str,
    values: tuple[str, ...],
    *,
    required: bool,
    multi: bool,
    hotkeys: tuple[str, ...] = (),
    labels: tuple[str, ...] = (),
    required_message: str = "",
) -> str:
    inner = ""
    for i, v in enumerate(values):
        attrs = f"value={quoteattr(labels[i] if labels else v)}"
        if labels:
            attrs += f" alias={quoteattr(v)}"
        if hotkeys:
            attrs += f' hotkey="{hotkeys[i]}"'
        inner += f"<Choice {attrs}/>"
    attrs = f'name="{name}" toName="{to_name}" choice="{"multiple" if multi else "single-radio"}"'
    attrs += ' showInline="true"'
    if required:
        attrs += (
            f' required="true" requiredMessage={quoteattr(required_message or "Choose an answer")}'
        )
    return f"<Choices {attrs}>{inner}</Choices>"


def alignment_config(*, with_rating: bool = True, with_issues: bool = True) -> str:
    """Image + prompt; a required yes/no "does the image match the prompt?", optional 1–5 and tags."""
    parts = [
        "<View>",
        f"<Style>{_CSS}</Style>",
        '<Header value="Prompt"/>',
        f'<Text name="{PROMPT}" value="${PROMPT}"/>',
        f'<View className="checker">{_image(IMAGE, IMAGE, "384px")}</View>',
        '<Header value="Does the image match the prompt? (keys y / n)"/>',
        _choices(
            ALIGNED,
            IMAGE,
            (YES, NO),
            required=True,
            multi=False,
            hotkeys=("y", "n"),
            required_message="Choose yes or no: does the image match the prompt?",
        ),
    ]
    if with_rating:
        parts += [
            '<Header value="How well does it match? (1–5, optional)"/>',
            f'<Rating name="{ALIGNMENT_RATING}" toName="{IMAGE}" maxRating="5"/>',
        ]
    if with_issues:
        parts += [
            '<Header value="Issues (optional)"/>',
            _choices(ISSUES, IMAGE, ISSUE_TAGS, required=False, multi=True),
        ]
    parts.append("</View>")
    return "".join(parts)


def style_config(exemplars: int = 0) -> str:
    """Image + prompt + style exemplars; required pass/fail and a required 1–5 sticker-style rating.

    Each exemplar is its own `<Image>` (data keys `exemplar_1` … `exemplar_N`, N = `exemplars`):
    Label Studio Community's `<Image valueList=…>` strip never finishes loading (`setImageLoaded`
    of null) and blocks the whole task.
    """
    keys = exemplar_keys(exemplars)
    shown = "".join(f"<View>{_image(key, key, '160px')}</View>" for key in keys)
    strip = (
        [
            '<Header value="The target style: exemplars"/>',
            f'<View className="checker exemplars">{shown}</View>',
        ]
        if keys
        else []
    )
    return "".join(
        [
            "<View>",
            f"<Style>{_CSS}</Style>",
            '<Header value="Prompt"/>',
            f'<Text name="{PROMPT}" value="${PROMPT}"/>',
            f'<View className="checker">{_image(IMAGE, IMAGE, "384px")}</View>',
            '<Header value="Is this a good sticker in the target style? (keys p / f)"/>',
            _choices(
                STYLE_PASS,
                IMAGE,
                (PASS, FAIL),
                required=True,
                multi=False,
                hotkeys=("p", "f"),
                required_message="Choose pass or fail before submitting",
            ),
            '<Header value="Sticker style (1–5)"/>',
            f'<Rating name="{STYLE_RATING}" toName="{IMAGE}" maxRating="5" required="true"'
            ' requiredMessage="Rate the sticker style (1–5)"/>',
            *strip,
            "</View>",
        ]
    )


def pairwise_config() -> str:
    """Two generations of the same prompt and seed from two checkpoints; pick the better or tie."""
    return "".join(
        [
            "<View>",
            f"<Style>{_CSS}</Style>",
            '<Header value="Prompt"/>',
            f'<Text name="{PROMPT}" value="${PROMPT}"/>',
            '<Header value="Which image is the better sticker for this prompt? Choose A, B or'
            ' tie (keys a / b / t), then submit."/>',
            '<View className="pair checker">',
            f'<View><Header value="A" size="4"/>{_image(LEFT, "image_a", "300px")}</View>',
            f'<View><Header value="B" size="4"/>{_image(RIGHT, "image_b", "300px")}</View>',
            "</View>",
            _choices(
                PAIRWISE,
                LEFT,
                PAIRWISE_CHOICES,
                required=True,
                multi=False,
                hotkeys=("a", "b", "t"),
                labels=("A is better", "B is better", "tie: equally good"),
                required_message="Choose A, B or tie before submitting",
            ),
            "</View>",
        ]
    )


# Each builder's defaults give the kind's standard config (style: without exemplars).
CONFIG_BUILDERS: dict[str, Callable[[], str]] = {
    "alignment": alignment_config,
    "style": style_config,
    "pairwise": pairwise_config,
}
DATA_KEYS = {
    "alignment": ALIGNMENT_DATA_KEYS,
    "style": STYLE_DATA_KEYS,
    "pairwise": PAIRWISE_DATA_KEYS,
}


def config_for(kind: str, *, exemplars: int = 0) -> str:
    """The labeling config for a round kind: `alignment`, `style` (showing `exemplars` style
    exemplars) or `pairwise`."""
    if kind == "style":
        return style_config(exemplars)
    try:
        return CONFIG_BUILDERS[kind]()
    except KeyError:
        raise ValueError(f"kind: {kind!r} is not one of {sorted(CONFIG_BUILDERS)}") from None


def data_keys(label_config: str) -> set[str]:
    """Task data keys a labeling config reads (`value="$image"`, `valueList="$exemplars"`).

    Label Studio rejects a whole import when one task lacks one of them, so pushes check first.
    """
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as exc:
        raise ValueError(f"label_config: not well-formed XML: {exc}") from None
    keys = set()
    for element in root.iter():
        for attribute in ("value", "valueList"):
            value = element.get(attribute, "")
            if value.startswith("$") and len(value) > 1:
                keys.add(value[1:])
    return keys
