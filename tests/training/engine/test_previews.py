"""Validation previews while training: grids at the configured steps, deterministic for a seed,
and no effect on what the run trains."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from training.engine.config import ConfigError, TrainConfig
from training.engine.previews import read_preview_index
from training.engine.run import run_training

PREVIEWS = {
    "every": 2,
    "prompts": ["a red circle", "a blue square"],
    "seeds": [0, 1],
    "sampler": {"steps": 2},
}


def test_previews_are_grids_at_the_configured_steps_and_repeat_for_a_seed(make_config, tmp_path):
    first = run_training(make_config(output_dir=str(tmp_path / "a"), previews=PREVIEWS))
    entries = read_preview_index(first.output_dir)
    assert [e["step"] for e in entries] == [2, 4]
    root = Path(first.output_dir) / "previews"
    for entry in entries:
        grid = Image.open(root / entry["grid"])
        assert grid.size == (2 * 32, 2 * 32)  # columns = seeds, rows = prompts
        assert [(i["prompt"], i["seed"]) for i in entry["images"]] == [
            (p, s) for p in PREVIEWS["prompts"] for s in PREVIEWS["seeds"]
        ]
        assert all((root / i["file"]).is_file() for i in entry["images"])
    grid = lambda out, step: (Path(out) / "previews" / f"step-{step:07d}" / "grid.png").read_bytes()  # noqa: E731
    assert grid(first.output_dir, 2) != grid(first.output_dir, 4)  # training moved the samples
    again = run_training(make_config(output_dir=str(tmp_path / "b"), previews=PREVIEWS))
    assert grid(again.output_dir, 2) == grid(first.output_dir, 2)
    other = run_training(
        make_config(output_dir=str(tmp_path / "c"), previews={**PREVIEWS, "seeds": [5, 6]})
    )
    assert grid(other.output_dir, 2) != grid(first.output_dir, 2)
    plain = run_training(make_config(output_dir=str(tmp_path / "d")))
    assert plain.losses == first.losses  # previews leave the training's random streams alone
    assert not (Path(plain.output_dir) / "previews").exists()


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"every": -1}, "previews.every"),
        ({"every": 2, "prompts": []}, "previews.prompts"),
        ({"every": 2, "prompts": ["x"], "seeds": [-1]}, "previews.seeds"),
        ({"every": 2, "prompts": ["x"], "sampler": {"scheduler": "nope"}}, "previews.sampler"),
        ({"every": 2, "prompts": ["x"], "colour": 1}, "previews.colour"),
    ],
)
def test_bad_preview_settings_name_their_field(make_config, value, field):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict(make_config(previews=value))
    assert caught.value.field == field
