import pytest

from curation.prompts.descriptors import (
    PRESETS,
    StyleDescriptor,
    apply_descriptor,
    remove_descriptor,
)

STICKER = PRESETS["sticker"]
PROMPTS = [
    "a corgi in sunglasses",
    "a corgi in sunglasses.",
    "  a corgi   in sunglasses ,  ",
    "A corgi in sunglasses, Sticker, die-cut,  white border, flat colours.",
    "a sticker of a corgi",
    "",
]


def test_sticker_suffix():
    assert apply_descriptor("a corgi in sunglasses.", STICKER) == (
        "a corgi in sunglasses, sticker, die-cut, white border, flat colours"
    )


@pytest.mark.parametrize("descriptor", list(PRESETS.values()), ids=list(PRESETS))
@pytest.mark.parametrize("prompt", PROMPTS)
def test_applying_twice_equals_applying_once(prompt, descriptor):
    once = apply_descriptor(prompt, descriptor)
    assert apply_descriptor(once, descriptor) == once
    assert once.lower().count((descriptor.suffix or descriptor.prefix).lower()) == 1


def test_already_described_prompt_is_left_alone():
    prompt = "A corgi in sunglasses, Sticker, die-cut, white border, flat colours."
    assert apply_descriptor(prompt, STICKER) == prompt


def test_prefix_and_suffix_together_and_removal():
    both = StyleDescriptor("both", prefix="a sticker of", suffix="flat colours")
    described = apply_descriptor("a fox in the snow", both)
    assert described == "a sticker of a fox in the snow, flat colours"
    assert apply_descriptor(described, both) == described
    assert remove_descriptor(described, both) == "a fox in the snow"
    assert remove_descriptor("a fox in the snow", both) == "a fox in the snow"


def test_word_boundaries_are_respected():
    sticker_of = PRESETS["sticker_of"]
    assert (
        apply_descriptor("a sticker offer banner", sticker_of)
        == "a sticker of a sticker offer banner"
    )
    flat = StyleDescriptor("flat", suffix="flat colours")
    assert (
        apply_descriptor("a poster in nonflat colours", flat)
        == "a poster in nonflat colours, flat colours"
    )


def test_styledrop_descriptor_joins_with_a_space():
    assert apply_descriptor("a cat", PRESETS["styledrop_sticker"]) == "a cat in sticker style"


def test_descriptor_round_trips_and_validates():
    assert StyleDescriptor.from_dict(STICKER.to_dict()) == STICKER
    with pytest.raises(ValueError, match="neither prefix nor suffix"):
        StyleDescriptor("empty")
    with pytest.raises(ValueError, match="needs a name"):
        StyleDescriptor(" ", suffix="x")
