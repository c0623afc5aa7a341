"""Optional preference scorers (PickScore, HPSv2, ...) loaded from weights a user put on disk.

Both models named in the issue are CLIP models fine-tuned on human preferences and score an
image for a prompt as `logit_scale * cos(image, prompt)`:
- `hf_clip`: a transformers `CLIPModel` folder with its processor and tokenizer (PickScore_v1);
- `open_clip`: an open_clip architecture plus a checkpoint file (HPSv2 is `ViT-H-14` + its `.pt`).
ImageReward needs its own BLIP-based package, which this platform does not install; asking for it
is refused with that reason rather than scored by something else. Nothing here downloads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import training.engine  # noqa: F401  (torchvision shim before transformers/open_clip)

KINDS = ("hf_clip", "open_clip")


class PreferenceModelError(ValueError):
    """A preference-model entry in settings cannot be used; the message names the entry."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class PreferenceScorer:
    name: str
    kind: str
    weights: str
    sha256: str
    model: Any
    encode: Any  # (images, prompts) -> (image rows, text rows), unit length
    logit_scale: float

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "weights": self.weights,
            "sha256": self.sha256,
        }

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
        image_rows, text_rows = self.encode(list(images), list(prompts))
        return (self.logit_scale * (image_rows * text_rows).sum(-1)).tolist()


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features.
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _hf_clip(path: Path) -> tuple[Any, Any, float]:
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
    processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)

    def encode(images: list[Any], prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            image_rows = _features(model.get_image_features(**pixels))
            text_rows = _features(model.get_text_features(**tokens))
        return (
            torch.nn.functional.normalize(image_rows, dim=-1),
            torch.nn.functional.normalize(text_rows, dim=-1),
        )

    return model, encode, float(model.logit_scale.detach().exp())


def _open_clip(architecture: str, path: Path) -> tuple[Any, Any, float]:
    from training.engine import metrics

    bundle = metrics.load_metric_clip(architecture, path)

    def encode(images: list[Any], prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return metrics.embed_images(bundle, images), metrics.embed_texts(bundle, prompts)

    return bundle.model, encode, float(bundle.model.logit_scale.detach().exp())


def load_preference_scorer(entry: dict[str, Any]) -> PreferenceScorer:
    """One settings entry: {"name", "kind": "hf_clip"|"open_clip", "weights", "model"?}."""
    name = str(entry.get("name") or "")
    where = f"EVAL_PREFERENCE_MODELS[{name or '?'}]"
    kind = entry.get("kind")
    if kind == "image_reward":
        raise PreferenceModelError(
            f"{where}.kind: ImageReward needs the image-reward package (BLIP), not installed here"
        )
    if kind not in KINDS:
        raise PreferenceModelError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not name:
        raise PreferenceModelError(f"{where}.name: is required")
    weights = Path(str(entry.get("weights") or ""))
    if not str(entry.get("weights") or "") or not weights.exists():
        raise PreferenceModelError(f"{where}.weights: {weights} does not exist")
    if kind == "hf_clip":
        model, encode, scale = _hf_clip(weights)
    else:
        architecture = entry.get("model")
        if not architecture:
            raise PreferenceModelError(f"{where}.model: the open_clip architecture is required")
        model, encode, scale = _open_clip(str(architecture), weights)
    return PreferenceScorer(name, str(kind), str(weights), _sha256(weights), model, encode, scale)
