"""Validation previews while training: every N steps, fixed prompts × seeds through the run's
own pipeline, saved as a grid under `<output_dir>/previews/` with a JSON index.

The platform imports the index into the TrainingRun as the run trains
(`training/services/previews.py`), so the admin run page shows how the samples change next to
the loss curve. Sampling starts from per-seed noise and runs under a forked RNG, so previews
are deterministic for a seed and leave the training's random streams (and exact resume)
untouched.

Layout:

    previews/index.json                 {"previews": [entry, ...]} in step order
    previews/step-NNNNNNN/grid.png      rows = prompts, columns = seeds
    previews/step-NNNNNNN/p<i>-s<seed>.png
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from training.engine.errors import ConfigError

PREVIEWS_DIR = "previews"
INDEX_FILE = "index.json"
MAX_PREVIEW_IMAGES = 64


@dataclass
class PreviewSettings:
    """The `previews` object of a TrainConfig; `every: 0` (the default) turns previews off."""

    every: int = 0
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    sampler: dict[str, Any] = field(default_factory=lambda: {"steps": 20})

    @classmethod
    def from_dict(cls, data: dict[str, Any], resolution: int) -> PreviewSettings:
        if not isinstance(data, dict):
            raise ConfigError("previews", "must be an object")
        known = {"every", "prompts", "seeds", "sampler"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"previews.{unknown[0]}", f"unknown field (known: {sorted(known)})")
        settings = cls(**data)
        every = settings.every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ConfigError("previews.every", f"must be an integer >= 0, got {every!r}")
        if not every:
            return settings
        prompts = settings.prompts
        if not isinstance(prompts, list) or not prompts:
            raise ConfigError("previews.prompts", "needs at least one prompt when every > 0")
        if any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ConfigError("previews.prompts", "entries must be non-empty strings")
        seeds = settings.seeds
        if (
            not isinstance(seeds, list)
            or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
        ):
            raise ConfigError("previews.seeds", f"must be non-negative integers, got {seeds!r}")
        if len(prompts) * len(seeds) > MAX_PREVIEW_IMAGES:
            raise ConfigError(
                "previews",
                f"{len(prompts)} prompts x {len(seeds)} seeds is over {MAX_PREVIEW_IMAGES} "
                "images per preview",
            )
        settings.sampler_settings(resolution)
        return settings

    def sampler_settings(self, resolution: int) -> Any:
        from training.engine.generation import SamplerSettings

        if not isinstance(self.sampler, dict):
            raise ConfigError("previews.sampler", "must be an object")
        try:
            return SamplerSettings.from_dict({"resolution": resolution, **self.sampler})
        except (TypeError, ValueError) as error:
            raise ConfigError("previews.sampler", str(error)) from error


def preview_grid(images: list[Image.Image], columns: int) -> Image.Image:
    """Images in rows of `columns` (one row per prompt), on white."""
    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for index, image in enumerate(images):
        tile = image.convert("RGBA")
        grid.paste(tile, ((index % columns) * width, (index // columns) * height), tile)
    return grid


def read_preview_index(output_dir: str | Path) -> list[dict[str, Any]]:
    """The previews written so far, in step order ([] when none)."""
    path = Path(output_dir) / PREVIEWS_DIR / INDEX_FILE
    if not path.is_file():
        return []
    entries = json.loads(path.read_text()).get("previews", [])
    assert isinstance(entries, list)
    return entries


def write_preview(
    pipeline: Any, settings: PreviewSettings, resolution: int, output_dir: str | Path, step: int
) -> dict[str, Any]:
    """Generate the preview for `step`, write its files and index entry; returns the entry.
    A step written before (a run resumed from an earlier checkpoint) is replaced."""
    import torch

    from training.engine.generation import generate

    root = Path(output_dir) / PREVIEWS_DIR
    folder = root / f"step-{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    devices = [pipeline.device] if pipeline.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        images = generate(
            settings.prompts,
            settings.seeds,
            settings.sampler_settings(resolution),
            pipeline=pipeline,
        )
    files = []
    for item in images:
        name = f"p{settings.prompts.index(item.prompt)}-s{item.seed}.png"
        item.image.save(folder / name)
        files.append({"file": f"{folder.name}/{name}", "prompt": item.prompt, "seed": item.seed})
    preview_grid([item.image for item in images], len(settings.seeds)).save(folder / "grid.png")
    entry = {
        "step": step,
        "grid": f"{folder.name}/grid.png",
        "prompts": list(settings.prompts),
        "seeds": list(settings.seeds),
        "images": files,
    }
    entries = [e for e in read_preview_index(output_dir) if e["step"] != step] + [entry]
    entries.sort(key=lambda e: int(e["step"]))
    temporary = root / f"{INDEX_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps({"previews": entries}, indent=2))
    os.replace(temporary, root / INDEX_FILE)  # a reader never sees half an index
    return entry
