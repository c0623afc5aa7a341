"""`python -m training.engine toy-world DIR`: build the whole toy world, offline and deterministic.

DIR/
  base/                  diffusers folder: the base model pre-trained on photographs
  clip/                  the toy CLIP (open_clip_model.safetensors + open_clip_config.json) and
                         toy_world.json, the marker the platform's report recognises
  datasets/<role>/       manifest.parquet + images/ for domain, alignment and style
  prompts.json           evaluation prompts: every content caption, held-out ones marked
  toy_world.json         settings, checksums and what was measured while building

Roles: `domain` and `alignment` are photographs of the seen contents (different seeds), `style`
is stickers of a narrow content range (single red or blue shapes), `style_references` are
further stickers for scoring style similarity. `ToyWorldSettings.small()` is the mode tests use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.engine.data import write_manifest
from training.engine.toy_world import scenes
from training.engine.toy_world.base import build_components, save_base, train_unet, train_vae
from training.engine.toy_world.clip import save_clip, text_alignment_report, train_clip

MARKER = "toy_world.json"


@dataclass
class ToyWorldSettings:
    seed: int = 0
    resolution: int = 32
    photos_per_content: int = 24
    stickers_per_content: int = 24
    clip_steps: int = 600
    clip_batch_size: int = 128
    vae_steps: int = 400
    unet_steps: int = 1500
    batch_size: int = 32

    @classmethod
    def small(cls) -> ToyWorldSettings:
        """Enough to make the measurements mean something, in a few CPU minutes.

        The base gets its full training: with fewer steps its samples were blobs whose prompt
        the toy CLIP ranked 17th of 36 (median), too weak for a test of prompt following."""
        return cls(
            photos_per_content=8,
            stickers_per_content=10,
            clip_steps=250,
            clip_batch_size=96,
            batch_size=24,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _write_role(
    directory: Path, role: str, items: list[tuple[Any, scenes.Content]]
) -> dict[str, str]:
    folder = directory / "datasets" / role
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for image, content in items:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        (folder / "images" / f"{sha}.png").write_bytes(data)
        rows.append(
            {
                "image_sha256": sha,
                "caption": content.caption,
                "label": role,
                "weight": 1.0,
                "split": "train",
                "image_path": f"images/{sha}.png",
                "category": content.category,
            }
        )
    checksum = write_manifest(folder / "manifest.parquet", rows)
    return {
        "manifest": str(folder / "manifest.parquet"),
        "sha256": checksum,
        "image_root": str(folder),
    }


def render_world(settings: ToyWorldSettings) -> dict[str, list[tuple[Any, scenes.Content]]]:
    """Every image of every role, from disjoint seed ranges so no image appears twice."""
    seen = [c for c in scenes.all_contents() if not scenes.is_held_out(c)]
    size = settings.resolution

    def seeds(offset: int, count: int, index: int) -> range:
        start = settings.seed * 1_000_000 + offset * 100_000 + index * 1_000
        return range(start, start + count)

    world: dict[str, list[tuple[Any, scenes.Content]]] = {
        "domain": [],
        "alignment": [],
        "style": [],
        "style_references": [],
        "clip_held_out": [],
    }
    for index, content in enumerate(scenes.all_contents()):
        if content in seen:
            for s in seeds(1, settings.photos_per_content, index):
                world["domain"].append((scenes.photograph(content, s, size), content))
            for s in seeds(2, max(2, settings.photos_per_content // 2), index):
                world["alignment"].append((scenes.photograph(content, s, size), content))
        if scenes.in_sticker_set(content):
            for s in seeds(3, settings.stickers_per_content, index):
                world["style"].append((scenes.sticker(content, s, size), content))
        for s in seeds(4, 2, index):  # references for style similarity, never trained on
            world["style_references"].append((scenes.sticker(content, s, size), content))
        if content not in seen:
            for s in seeds(5, 4, index):
                world["clip_held_out"].append((scenes.photograph(content, s, size), content))
                world["clip_held_out"].append((scenes.sticker(content, s, size), content))
    return world


def build_toy_world(
    directory: str | Path,
    settings: ToyWorldSettings | None = None,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Render, train and write the toy world; returns (and writes) its toy_world.json."""
    settings = settings or ToyWorldSettings()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        world = render_world(settings)
        datasets = {
            role: _write_role(directory, role, world[role])
            for role in ("domain", "alignment", "style", "style_references")
        }
        log(f"toy world: {', '.join(f'{len(world[r])} {r}' for r in datasets)} images")

        clip_items = (
            world["domain"]
            + world["style"]
            + [
                (scenes.sticker(c, 7_000_000 + i, settings.resolution), c)
                for i, (_, c) in enumerate(
                    world["domain"][:: max(1, settings.photos_per_content // 4)]
                )
            ]
        )
        looks = ["photo"] * len(world["domain"]) + ["sticker"] * (
            len(clip_items) - len(world["domain"])
        )
        clip = train_clip(
            [image for image, _ in clip_items],
            [content.caption for _, content in clip_items],
            looks,
            steps=settings.clip_steps,
            batch_size=settings.clip_batch_size,
            seed=settings.seed,
            log=log,
        )
        held_out = world["clip_held_out"]
        clip_report = text_alignment_report(
            clip,
            [image for image, _ in held_out],
            [content.caption for _, content in held_out],
            [c.caption for c in scenes.all_contents()],
        )
        log(
            f"toy CLIP on held-out captions: top-1 {clip_report['top1']} (chance {clip_report['chance']:.3f})"
        )

        components = build_components(settings.seed, settings.resolution)
        photos = [image for image, _ in world["domain"]]
        vae_error = train_vae(
            components["vae"],
            photos + [image for image, _ in world["style"]],
            steps=settings.vae_steps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            log=log,
        )
        unet_loss = train_unet(
            components,
            photos,
            [content.caption for _, content in world["domain"]],
            steps=settings.unet_steps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            log=log,
        )
    info: dict[str, Any] = {
        "kind": "toy-world",
        "settings": settings.to_dict(),
        "held_out_captions": sorted(
            c.caption for c in scenes.all_contents() if scenes.is_held_out(c)
        ),
        "sticker_captions": sorted(
            c.caption for c in scenes.all_contents() if scenes.in_sticker_set(c)
        ),
        "clip_text_alignment": clip_report,
        "vae_reconstruction_mse": round(vae_error, 5),
        "unet_final_loss": round(unet_loss, 5),
    }
    clip_path = save_clip(clip, directory / "clip", info)
    base_path = save_base(components, directory / "base")
    prompts = [
        {"text": c.caption, "category": c.category, "held_out": scenes.is_held_out(c)}
        for c in scenes.all_contents()
    ]
    (directory / "prompts.json").write_text(json.dumps(prompts, indent=2))
    info.update(
        {
            "base_model": str(base_path),
            "clip_weights": str(clip_path),
            "datasets": datasets,
            "prompts": str(directory / "prompts.json"),
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    (directory / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True))
    log(f"toy world written to {directory} in {info['seconds']} s")
    return info


def load_toy_world(directory: str | Path) -> dict[str, Any]:
    """The toy_world.json of a built world; a clear error when DIR holds none."""
    marker = Path(directory) / MARKER
    if not marker.is_file():
        raise FileNotFoundError(
            f"{directory}: no toy world here (no {MARKER}); build one with "
            "`python -m training.engine toy-world DIR`"
        )
    return dict(json.loads(marker.read_text()))
