"""Labeling-config XML for the platform's three Label Studio task kinds.

Control names here are the contract with `parsing.py`: a result item is recognised by its
`from_name`, so renaming a control means changing both (and breaks old rounds' annotations).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
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
STYLE_DATA_KEYS = (IMAGE, PROMPT, EXEMPLARS)
PAIRWISE_DATA_KEYS = ("image_a", "image_b", PROMPT)

# Generated stickers are often RGBA: a checkerboard shows what is transparent instead of
# letting it blend into the page's white.
_CHECKERBOARD_CSS = (
    ".checker img { background-color: #fff;"
    " background-image: repeating-conic-gradient(#d9d9d9 0% 25%, #fff 0% 50%);"
    " background-size: 16px 16px; }"
)


def _choices(
    name: str, to_name: str, values: tuple[str, ...], *, required: bool, multi: bool
) -> str:
    inner = "".join(f"<Choice value={quoteattr(v)}/>" for v in values)
    attrs = f'name="{name}" toName="{to_name}" choice="{"multiple" if multi else "single-radio"}"'
    attrs += ' showInline="true"'
    if required:
        attrs += ' required="true"'
    return f"<Choices {attrs}>{inner}</Choices>"


def alignment_config(*, with_rating: bool = True, with_issues: bool = True) -> str:
    """Image + prompt; a required yes/no "does the image match the prompt?", optional 1–5 and tags."""
    parts = [
        "<View>",
        f"<Style>{_CHECKERBOARD_CSS}</Style>",
        '<Header value="Prompt"/>',
        f'<Text name="{PROMPT}" value="${PROMPT}"/>',
        f'<View className="checker"><Image name="{IMAGE}" value="${IMAGE}" maxWidth="512px"/></View>',
        '<Header value="Does the image match the prompt?"/>',
        _choices(ALIGNED, IMAGE, (YES, NO), required=True, multi=False),
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


def style_config() -> str:
    """Image + prompt + style exemplars; required pass/fail and a required 1–5 sticker-style rating."""
    return "".join(
        [
            "<View>",
            f"<Style>{_CHECKERBOARD_CSS}</Style>",
            '<Header value="Prompt"/>',
            f'<Text name="{PROMPT}" value="${PROMPT}"/>',
            f'<View className="checker"><Image name="{IMAGE}" value="${IMAGE}" maxWidth="512px"/></View>',
            '<Header value="Is this a good sticker in the target style?"/>',
            _choices(STYLE_PASS, IMAGE, (PASS, FAIL), required=True, multi=False),
            '<Header value="Sticker style (1–5)"/>',
            f'<Rating name="{STYLE_RATING}" toName="{IMAGE}" maxRating="5" required="true"/>',
            '<Header value="Style exemplars"/>',
            # valueList shows a list of image URLs from the task (one exemplar per page).
            f'<View className="checker"><Image name="{EXEMPLARS}" valueList="${EXEMPLARS}"'
            ' maxWidth="256px"/></View>',
            "</View>",
        ]
    )


def pairwise_config() -> str:
    """Two generations of the same prompt and seed from two checkpoints; pick the better one."""
    return "".join(
        [
            "<View>",
            f"<Style>{_CHECKERBOARD_CSS}</Style>",
            '<Header value="Prompt"/>',
            f'<Text name="{PROMPT}" value="${PROMPT}"/>',
            '<Header value="Which image is the better sticker for this prompt?"/>',
            '<View style="display: flex; gap: 16px;" className="checker">',
            f'<Image name="{LEFT}" value="$image_a" maxWidth="384px"/>',
            f'<Image name="{RIGHT}" value="$image_b" maxWidth="384px"/>',
            "</View>",
            f'<Pairwise name="{PAIRWISE}" toName="{LEFT},{RIGHT}"/>',
            "</View>",
        ]
    )


CONFIG_BUILDERS = {
    "alignment": alignment_config,
    "style": style_config,
    "pairwise": pairwise_config,
}
DATA_KEYS = {
    "alignment": ALIGNMENT_DATA_KEYS,
    "style": STYLE_DATA_KEYS,
    "pairwise": PAIRWISE_DATA_KEYS,
}


def config_for(kind: str) -> str:
    """The labeling config for a round kind: `alignment`, `style` or `pairwise`."""
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
