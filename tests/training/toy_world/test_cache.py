"""The toy-world cache: one build per (settings, code), an interrupted build started again, and
a sample pool with captions the platform can ingest. The build itself is replaced by a recorder
here (test_toy_world.py builds the real one)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from training.engine.toy_world import cache
from training.engine.toy_world.build import MARKER, ToyWorldSettings


@pytest.fixture
def builds(monkeypatch) -> list[Path]:
    made: list[Path] = []

    def fake_build(directory, settings, *, log):
        directory = Path(directory)
        (directory / "clip").mkdir(parents=True)
        info = {"kind": "toy-world", "settings": settings.to_dict(), "base_model": str(directory)}
        (directory / MARKER).write_text(json.dumps(info))
        (directory / "clip" / MARKER).write_text(json.dumps(info))
        made.append(directory)
        return info

    monkeypatch.setattr(cache, "build_toy_world", fake_build)
    return made


def test_a_world_is_built_once_per_settings_and_its_paths_point_at_its_final_folder(
    tmp_path, builds
):
    small = ToyWorldSettings.small()
    first = cache.cached_toy_world(tmp_path, small, log=lambda _: None)
    again = cache.cached_toy_world(tmp_path, ToyWorldSettings.small(), log=lambda _: None)
    assert len(builds) == 1 and again == first
    assert first["base_model"] == first["directory"] == str(tmp_path / first["key"])
    assert ".building" not in (tmp_path / first["key"] / "clip" / MARKER).read_text()

    other = cache.cached_toy_world(tmp_path, ToyWorldSettings(seed=1), log=lambda _: None)
    assert len(builds) == 2 and other["key"] != first["key"]


def test_the_key_follows_the_code_that_builds_the_world(monkeypatch):
    settings = ToyWorldSettings.small()
    before = cache.world_key(settings)
    monkeypatch.setattr(cache, "code_version", lambda: "changed")
    assert cache.world_key(settings) != before


def test_an_interrupted_build_is_started_again(tmp_path, builds):
    settings = ToyWorldSettings.small()
    leftover = tmp_path / f"{cache.world_key(settings)}.building"
    (leftover / "half").mkdir(parents=True)
    info = cache.cached_toy_world(tmp_path, settings, log=lambda _: None)
    assert len(builds) == 1 and not leftover.exists()
    assert not (Path(info["directory"]) / "half").exists()


def test_the_pool_lists_every_photograph_and_sticker_with_its_caption(tmp_path, builds):
    info = cache.cached_toy_world(tmp_path, ToyWorldSettings.small(), log=lambda _: None)
    with open(info["pool"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 36 * 2  # two looks × 36 contents × 2 samples
    looks = {row["path"].split("/")[0] for row in rows}
    assert looks == {"photos", "stickers"}
    assert {row["caption"] for row in rows if "two-red-circles" in row["path"]} == {
        "two red circles"
    }
    assert all((Path(info["pool"]).parent / row["path"]).is_file() for row in rows)
