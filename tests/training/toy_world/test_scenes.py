"""The toy world's scenes and sweep arithmetic, without training anything."""

from __future__ import annotations

import pytest

from training.engine.toy_world import scenes
from training.engine.toy_world.build import load_toy_world


def test_scenes_are_deterministic_and_captions_name_the_content():
    content = scenes.Content(2, "red", "circle")
    assert content.caption == "two red circles"
    assert scenes.photograph(content, 5).tobytes() == scenes.photograph(content, 5).tobytes()
    assert scenes.photograph(content, 5).tobytes() != scenes.photograph(content, 6).tobytes()
    sticker = scenes.sticker(content, 5)
    assert sticker.getpixel((0, 0)) == (255, 255, 255)  # white background
    held_out = [c for c in scenes.all_contents() if scenes.is_held_out(c)]
    assert len(held_out) == 6
    for attribute in ("count", "colour", "shape"):  # every value still seen in training
        seen = {getattr(c, attribute) for c in scenes.all_contents() if not scenes.is_held_out(c)}
        assert seen == {getattr(c, attribute) for c in scenes.all_contents()}


def test_a_missing_world_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="toy-world DIR"):
        load_toy_world(tmp_path)


def test_pareto_front_keeps_only_undominated_points():
    from training.engine.toy_world.sweep import pareto_front

    points = {
        "a": {"text": 0.3, "style": 0.1},
        "b": {"text": 0.2, "style": 0.4},
        "c": {"text": 0.2, "style": 0.3},  # beaten by b on style, tied on text
        "d": {"text": 0.1, "style": 0.1},
    }
    assert pareto_front(points) == ["a", "b"]


def test_the_world_keeps_held_out_content_out_of_training_and_renders_identically():
    from training.engine.toy_world.build import ToyWorldSettings, render_world

    settings = ToyWorldSettings(photos_per_content=2, stickers_per_content=2)
    world, again = render_world(settings), render_world(settings)
    for role in ("domain", "alignment", "style"):
        assert not any(scenes.is_held_out(content) for _, content in world[role]), role
    assert {c for _, c in world["clip_held_out"]} == {
        c for c in scenes.all_contents() if scenes.is_held_out(c)
    }
    assert {c.count for _, c in world["style"]} == {1}  # the narrow sticker range
    assert [i.tobytes() for i, _ in world["domain"]] == [i.tobytes() for i, _ in again["domain"]]
