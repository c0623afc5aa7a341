"""The files of a `styledrop_iterative` run under its output_dir, all paths relative to it so
the folder can move:

    styledrop_state.json              what is done: per iteration its stage and results
    references/<sha>.<ext>            the reference images, copied once (the resolver may be remote)
    iteration-01/train_manifest.parquet   references (+ descriptor) — what iteration 1 trains on
    iteration-01/checkpoints/step-…/  iteration 1's engine checkpoints
    iteration-01/generations/         iteration 1's model's images + generations.jsonl
    iteration-01/selection.json       feedback decisions and stats for those images
    iteration-02/train_manifest.parquet   selected generations (+ references) — iteration 2's data
    …

The state is written atomically (`write_json`), so a kill never leaves half a state file, and a
continued run whose config differs in a field that changes what was computed is refused.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.engine.config import ConfigError, TrainConfig
from training.engine.data import ImageCaptionDataset, Resolver, write_manifest
from training.engine.run_types import RESUME_MAY_CHANGE, DataError
from training.engine.style_prompts import with_style_descriptor
from training.engine.styledrop_feedback import Generation
from training.engine.styledrop_settings import StyleDropIterativeSettings

logger = logging.getLogger(__name__)

RECIPE = "styledrop_iterative"
STATE_FILE = "styledrop_state.json"
REFERENCES_DIR = "references"
TRAIN_MANIFEST = "train_manifest.parquet"
GENERATIONS_DIR = "generations"
GENERATIONS_INDEX = "generations.jsonl"
SELECTION_FILE = "selection.json"
# Besides what any resumed run may change, a finished run may be given more iterations.
DRIVER_MAY_CHANGE = RESUME_MAY_CHANGE | {"styledrop.iterations"}


def iteration_dir_name(iteration: int) -> str:
    return f"iteration-{iteration:02d}"


# ---- state --------------------------------------------------------------------------------------
def _settings_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(StyleDropIterativeSettings.from_config(config))


def fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The config with the fields a continued run may change removed, settings normalised (so
    an omitted default equals the same value written out)."""
    data = config.to_dict()
    data["styledrop"] = _settings_dict(config)
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if name == "styledrop":
            flat.update({f"styledrop.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return {k: v for k, v in flat.items() if k not in DRIVER_MAY_CHANGE}


def write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)  # atomic: a kill never leaves half a state file


class RunState:
    def __init__(self, root: Path, config: TrainConfig) -> None:
        self.root = root
        self.path = root / STATE_FILE
        current = fingerprint(config)
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            saved = data.get("fingerprint", {})
            for name in sorted(set(saved) | set(current)):
                if saved.get(name) != current.get(name):
                    raise ConfigError(
                        name,
                        f"differs from the {RECIPE} run being continued in {root} "
                        f"({saved.get(name)!r} there, {current.get(name)!r} here); "
                        "use a new output_dir for a different run",
                    )
            self.data = data
        else:
            self.data = {"recipe": RECIPE, "fingerprint": current, "iterations": {}}

    def save(self) -> None:
        write_json(self.path, self.data)

    def iteration(self, k: int) -> dict[str, Any]:
        return self.data["iterations"].setdefault(str(k), {})


# ---- references ---------------------------------------------------------------------------------
def _image_bytes(source: Any) -> bytes:
    from PIL import Image

    if isinstance(source, bytes):
        return source
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(source).read_bytes()


def copy_references(config: TrainConfig, root: Path, resolver: Resolver | None) -> dict[str, Any]:
    """Copy every readable reference image under `root`, so later iterations and generation need
    neither the resolver nor the original storage; unreadable ones are skipped and reported."""
    from PIL import Image

    spec = config.datasets["references"]
    dataset = ImageCaptionDataset.from_manifest(
        spec.manifest,
        spec.sha256,
        config.resolution,
        split=spec.split,
        resolver=resolver,
        image_root=spec.image_root,
    )
    folder = root / REFERENCES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for row in dataset.rows:
        try:
            data = _image_bytes(dataset.source(row))
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                extension = (image.format or "png").lower()
        except Exception as error:  # one bad reference must not stop the others
            where = row.image_path or "via resolver"
            logger.warning(
                "datasets.references: skipping %s (%s): %s", row.image_sha256, where, error
            )
            skipped.append(row.image_sha256)
            continue
        relative = f"{REFERENCES_DIR}/{row.image_sha256}.{extension}"
        (root / relative).write_bytes(data)
        rows.append(
            {
                "image_sha256": row.image_sha256,
                "caption": row.caption,
                "weight": row.weight,
                "image_path": relative,
            }
        )
    if not rows:
        raise DataError(
            f"datasets.references: {spec.manifest}: not one of {len(dataset.rows)} reference "
            "images could be read"
        )
    return {"rows": rows, "skipped": skipped}


# ---- manifests ----------------------------------------------------------------------------------
def reference_rows(references: list[dict[str, Any]], descriptor: str) -> list[dict[str, Any]]:
    return [
        {
            "image_sha256": ref["image_sha256"],
            "caption": with_style_descriptor(ref["caption"], descriptor),
            "prompt": ref["caption"],
            "weight": float(ref["weight"]),
            "split": "train",
            "image_path": ref["image_path"],
            "origin": "reference",
            "source_iteration": None,
            "generation_id": None,
            "seed": None,
        }
        for ref in references
    ]


def generation_rows(selected: list[Generation], descriptor: str) -> list[dict[str, Any]]:
    return [
        {
            "image_sha256": g.metadata["image_sha256"],
            "caption": with_style_descriptor(g.prompt, descriptor),
            "prompt": g.prompt,
            "weight": 1.0,
            "split": "train",
            "image_path": g.metadata["image_path"],
            "origin": "generation",
            "source_iteration": int(g.metadata["iteration"]),
            "generation_id": g.id,
            "seed": g.seed,
        }
        for g in selected
    ]


def write_train_manifest(root: Path, iteration: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    relative = f"{iteration_dir_name(iteration)}/{TRAIN_MANIFEST}"
    sha256 = write_manifest(root / relative, rows)
    origins = Counter(row["origin"] for row in rows)
    return {
        "path": relative,
        "sha256": sha256,
        "trained_on": {
            "references": origins.get("reference", 0),
            "generations": origins.get("generation", 0),
        },
    }


def read_generations(root: Path, iteration: int) -> list[Generation]:
    index = root / iteration_dir_name(iteration) / GENERATIONS_DIR / GENERATIONS_INDEX
    generations = []
    for line in index.read_text().splitlines():
        record = json.loads(line)
        generations.append(
            Generation(
                record["id"],
                record["prompt"],
                str(root / record["image_path"]),
                seed=record["seed"],
                metadata=record,
            )
        )
    return generations


def write_generations_index(root: Path, iteration: int, records: list[dict[str, Any]]) -> None:
    index_path = root / iteration_dir_name(iteration) / GENERATIONS_DIR / GENERATIONS_INDEX
    temporary = index_path.with_name(f"{index_path.name}.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(temporary, index_path)
