"""Model families: which layouts the engine trains, detected from a folder's model_index.json.

`inspect_model_folder(path)` reads a diffusers folder without loading weights and says which
family it is (or refuses it, naming the missing or unknown part); `family_of(path)` and
`get_family(name)` return the `ModelFamily` that the loop, recipes and generation call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine.errors import BaseModelError
from training.engine.families.base import (
    MODEL_FILE_SUFFIXES,
    OPTIONAL_PARTS,
    Geometry,
    ModelFamily,
    cast_conditioning,
    select_conditioning,
)
from training.engine.families.flow import FAMILY as SD3
from training.engine.families.sd import FAMILY as SD
from training.engine.families.sdxl import FAMILY as SDXL

__all__ = [
    "FAMILIES",
    "Geometry",
    "ModelFamily",
    "ModelFolder",
    "cast_conditioning",
    "family_of",
    "get_family",
    "inspect_model_folder",
    "select_conditioning",
]

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (SD, SDXL, SD3)}
BY_PIPELINE = {family.pipeline_class: family for family in FAMILIES.values()}
# Parts without weights: a folder with their config is complete.
CONFIG_ONLY = {"scheduler": "scheduler_config.json"}
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "spiece.model")


@dataclass(frozen=True)
class ModelFolder:
    """What a base model folder holds, read from disk without building any model."""

    path: Path
    family: str
    pipeline_class: str
    parts: dict[str, list[str]]  # component -> [library, class]
    variant: str | None = None
    size_bytes: int = 0
    weight_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "family": self.family,
            "pipeline_class": self.pipeline_class,
            "parts": self.parts,
            "variant": self.variant,
            "size_bytes": self.size_bytes,
            "weight_files": self.weight_files,
        }


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise BaseModelError(f"family {name!r} is not known (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def _weights(folder: Path) -> tuple[list[Path], list[Path]]:
    """(plain weight files, fp16-variant weight files) of one component folder."""
    plain: list[Path] = []
    variant: list[Path] = []
    for file in sorted(folder.iterdir()):
        if not file.is_file() or not file.name.endswith(MODEL_FILE_SUFFIXES):
            continue
        if file.name.endswith("index.json"):
            continue
        (variant if ".fp16." in file.name else plain).append(file)
    return plain, variant


def inspect_model_folder(path: str | Path) -> ModelFolder:
    """Detect the family of a diffusers folder and check that every part it lists is there.

    Raises BaseModelError naming the file or folder at fault: no model_index.json, a pipeline
    class no family trains, a part listed but missing (or without config/weights), a part a
    family needs but the index leaves out.
    """
    path = Path(path)
    if not path.exists():
        raise BaseModelError(f"base_model: {path}: no such folder")
    if not path.is_dir():
        raise BaseModelError(f"base_model: {path} is a file, not a diffusers folder")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise BaseModelError(
            f"base_model: {path}: missing model_index.json, so not a diffusers pipeline folder "
            "(write one with `python -m training.engine tiny-base DIR` or `save_pretrained`; a "
            "single .safetensors file is registered with a config folder instead)"
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BaseModelError(f"base_model: {index_file}: not valid JSON: {error}") from error
    if not isinstance(index, dict):
        raise BaseModelError(f"base_model: {index_file}: must be a JSON object")
    pipeline_class = str(index.get("_class_name", ""))
    family = BY_PIPELINE.get(pipeline_class)
    if family is None:
        known = ", ".join(f"{f.pipeline_class} ({f.name})" for f in FAMILIES.values())
        raise BaseModelError(
            f"base_model: {index_file}: _class_name {pipeline_class or None!r} is not a family "
            f"the engine trains (known: {known})"
        )
    parts: dict[str, list[str]] = {}
    weight_files: list[Path] = []
    variants: set[str | None] = set()
    for name, value in sorted(index.items()):
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is None or value[1] is None:
            if name not in OPTIONAL_PARTS:
                raise BaseModelError(
                    f"base_model: {index_file}: {name} is null, but the {family.name} family "
                    "needs it"
                )
            continue
        parts[name] = [str(value[0]), str(value[1])]
        folder = path / name
        if not folder.is_dir():
            raise BaseModelError(
                f"base_model: {path}: missing folder {name}/ (model_index.json lists "
                f"{value[1]} there)"
            )
        if name in CONFIG_ONLY:
            if not (folder / CONFIG_ONLY[name]).is_file():
                raise BaseModelError(f"base_model: {folder}: missing {CONFIG_ONLY[name]}")
            continue
        if name.startswith("tokenizer"):
            if not any((folder / f).is_file() for f in TOKENIZER_FILES):
                raise BaseModelError(
                    f"base_model: {folder}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)})"
                )
            continue
        if not (folder / "config.json").is_file():
            raise BaseModelError(f"base_model: {folder}: missing config.json")
        plain, fp16 = _weights(folder)
        if not plain and not fp16:
            raise BaseModelError(
                f"base_model: {folder}: no weights (*.safetensors or *.bin, or their .fp16. "
                "variant)"
            )
        variants.add(None if plain else "fp16")
        weight_files += plain or fp16
    if family.denoiser not in parts:
        raise BaseModelError(
            f"base_model: {index_file}: lists no {family.denoiser}, which the {family.name} "
            "family trains"
        )
    # A part with only fp16-variant files needs variant="fp16"; diffusers then takes the plain
    # files of parts that have no variant.
    variant = "fp16" if "fp16" in variants else None
    return ModelFolder(
        path=path,
        family=family.name,
        pipeline_class=pipeline_class,
        parts=parts,
        variant=variant,
        size_bytes=sum(f.stat().st_size for f in weight_files),
        weight_files=[str(f.relative_to(path)) for f in weight_files],
    )


def family_of(path: str | Path) -> ModelFamily:
    return FAMILIES[inspect_model_folder(path).family]
