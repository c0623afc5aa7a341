"""Labeling-config XML (the real server accepting them is in test_labelstudio_server.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from curation.labelstudio import configs


def controls(xml: str) -> dict[str, ET.Element]:
    return {el.get("name"): el for el in ET.fromstring(xml).iter() if el.get("toName")}


def test_alignment_has_a_required_yes_no_and_optional_rating_and_issue_tags() -> None:
    found = controls(configs.alignment_config())
    aligned = found[configs.ALIGNED]
    assert aligned.tag == "Choices" and aligned.get("required") == "true"
    assert [c.get("value") for c in aligned] == ["yes", "no"]
    rating = found[configs.ALIGNMENT_RATING]
    assert rating.tag == "Rating" and rating.get("maxRating") == "5"
    assert rating.get("required") is None
    issues = found[configs.ISSUES]
    assert issues.get("choice") == "multiple"
    assert tuple(c.get("value") for c in issues) == configs.ISSUE_TAGS
    assert "missing object" in configs.ISSUE_TAGS and "garbled text" in configs.ISSUE_TAGS


def test_alignment_without_optional_parts() -> None:
    found = controls(configs.alignment_config(with_rating=False, with_issues=False))
    assert set(found) == {configs.ALIGNED}


def test_style_has_pass_fail_rating_and_one_image_per_exemplar() -> None:
    xml = configs.style_config(exemplars=3)
    found = controls(xml)
    assert [c.get("value") for c in found[configs.STYLE_PASS]] == ["pass", "fail"]
    assert [c.get("hotkey") for c in found[configs.STYLE_PASS]] == ["p", "f"]
    assert found[configs.STYLE_RATING].get("required") == "true"
    images = {el.get("name"): el for el in ET.fromstring(xml).iter("Image")}
    # No valueList strip: it never loads in Label Studio Community (setImageLoaded of null).
    assert not any(el.get("valueList") for el in images.values())
    assert set(images) == {configs.IMAGE, "exemplar_1", "exemplar_2", "exemplar_3"}
    assert configs.data_keys(xml) == {"image", "prompt", "exemplar_1", "exemplar_2", "exemplar_3"}
    assert "exemplar_1" not in configs.style_config(exemplars=0)
    assert len(configs.exemplar_keys(50)) == configs.MAX_EXEMPLARS


def test_pairwise_requires_a_choice_of_a_b_or_tie() -> None:
    found = controls(configs.pairwise_config())
    choice = found[configs.PAIRWISE]
    assert choice.tag == "Choices" and choice.get("required") == "true"
    assert tuple(c.get("alias") for c in choice) == configs.PAIRWISE_CHOICES
    assert [c.get("hotkey") for c in choice] == ["a", "b", "t"]
    images = [el for el in ET.fromstring(configs.pairwise_config()).iter("Image")]
    # Small generations are shown large, unsmoothed, instead of at their native 32 px.
    assert [el.get("width") for el in images] == ["300px", "300px"]
    assert all(el.get("smoothing") == "false" for el in images)


@pytest.mark.parametrize("kind", ["alignment", "style", "pairwise"])
def test_data_keys_match_what_pushes_must_provide(kind: str) -> None:
    xml = configs.config_for(kind)
    assert configs.data_keys(xml) == set(configs.DATA_KEYS[kind])
    assert "<Style>" in xml  # checkerboard behind RGBA stickers


def test_unknown_kind_and_broken_xml_are_named() -> None:
    with pytest.raises(ValueError, match="kind: 'video'"):
        configs.config_for("video")
    with pytest.raises(ValueError, match="label_config: not well-formed"):
        configs.data_keys("<View>")
