"""The evaluation CLIP chosen in settings, and what the report says about it.

`EVAL_CLIP_MODEL` names an open_clip architecture and `EVAL_CLIP_WEIGHTS` a local weights path
(a `.safetensors`/`.pt` file or a `local-dir:` folder). The report and the API carry the model's
name, the weights' path and checksum, and whether the weights are random: a randomly initialised
CLIP scores images, but its numbers measure nothing, so such a report says so in place of
presenting them as a measurement. The toy world's CLIP (trained on that world's own pairs)
carries a `toy_world.json` beside its weights and is named as such. Preference models
(`EVAL_PREFERENCE_MODELS`, see `training.engine.preference`) are named with their checksums too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

TOY_WORLD_MARKER = "toy_world.json"
RANDOM_WEIGHTS_WARNING = (
    "The evaluation CLIP has random weights (EVAL_CLIP_WEIGHTS is empty): its scores are not a "
    "measurement of alignment or style. Set EVAL_CLIP_WEIGHTS to a trained model, or build the "
    "toy world (python -m training.engine toy-world DIR) for a CLIP that means something there."
)


def _weights_folder(weights: str) -> Path:
    path = Path(weights.removeprefix("local-dir:"))
    return path if path.is_dir() else path.parent


def toy_world_info(weights: str) -> dict[str, Any] | None:
    """The toy world's description when the weights are its CLIP, else None."""
    if not weights:
        return None
    marker = _weights_folder(weights) / TOY_WORLD_MARKER
    if not marker.is_file():
        return None
    try:
        return dict(json.loads(marker.read_text()))
    except (OSError, ValueError):
        return None


@dataclass
class EvalScorer:
    bundle: Any
    model_name: str
    weights: str
    preferences: list[Any] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        random_weights = not self.weights
        toy = toy_world_info(self.weights)
        return {
            "model": self.model_name,
            "weights": self.weights or None,
            "sha256": getattr(self.bundle, "weights_sha256", None),
            "random_weights": random_weights,
            "toy_world": toy is not None,
            "measurement": not random_weights,
            "warning": RANDOM_WEIGHTS_WARNING if random_weights else "",
            "preference_models": [p.describe() for p in self.preferences],
            "description": (
                "toy-world CLIP, trained contrastively on the toy world's image-caption pairs"
                if toy is not None
                else "random initialisation"
                if random_weights
                else "weights from EVAL_CLIP_WEIGHTS"
            ),
        }


def load_eval_scorer() -> EvalScorer:
    """Load the configured evaluation CLIP; a missing weights file is an error naming it."""
    from training.engine.metrics import load_metric_clip
    from training.engine.preference import load_preference_scorer

    weights = settings.EVAL_CLIP_WEIGHTS or ""
    model_name = settings.EVAL_CLIP_MODEL
    if weights and not weights.startswith("local-dir:") and not Path(weights).is_file():
        raise FileNotFoundError(f"EVAL_CLIP_WEIGHTS: {weights} does not exist")
    bundle = load_metric_clip(model_name, weights or None)
    preferences = [load_preference_scorer(entry) for entry in settings.EVAL_PREFERENCE_MODELS]
    return EvalScorer(
        bundle=bundle, model_name=model_name, weights=weights, preferences=preferences
    )
