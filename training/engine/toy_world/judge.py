"""What the toy CLIP sees in one image: the signals the demo's scripted annotators answer from.

Two zero-shot readings, both within the toy world where the toy CLIP's scores mean something:

- alignment: how the image's own prompt ranks among the world's captions (every content the
  world can draw): `alignment` is the fraction of the other captions the prompt beats, 1.0 when
  the toy CLIP would caption the image with its prompt, about 0.5 for an image that shows nothing
  of it;
- style: the probability CLIP's two-way softmax gives "a sticker of P" over "a photo of P" at the
  model's own logit scale, so above 0.5 exactly when the trade-off sweep's style pass rate counts
  the image as a pass (`sweep.style_passes`).

A verdict depends only on the image bytes, the prompt and the CLIP weights, so a retried or resumed
run that regenerates the same bytes reads the same signals.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.engine import metrics
from training.engine.toy_world import scenes
from training.engine.toy_world.sweep import style_captions


@dataclass(frozen=True)
class ToySignals:
    alignment: float  # fraction of the other captions the prompt beats, in [0, 1]
    rank: int  # the prompt's rank among the captions, 1 = best match
    style: float  # P("a sticker of P" | image) against "a photo of P", in (0, 1)


class ToyJudge:
    """The toy CLIP at `clip_weights` reading images against the world's captions."""

    def __init__(self, clip_weights: str | Path, captions: Sequence[str] | None = None) -> None:
        self.weights = str(clip_weights)
        self.bundle = metrics.load_metric_clip("tiny-clip", self.weights)
        self.captions = list(captions or [c.caption for c in scenes.all_contents()])
        self._caption_rows = metrics.embed_texts(self.bundle, self.captions)
        scale = self.bundle.model.logit_scale.detach().exp().clamp(max=100)
        self.logit_scale = float(scale)

    def signals(self, items: Sequence[tuple[bytes, str]]) -> list[ToySignals]:
        """(image bytes, prompt) → signals; a prompt outside the captions is ranked against them."""
        return [self._one(data, prompt) for data, prompt in items]

    def _one(self, data: bytes, prompt: str) -> ToySignals:
        # One image at a time: batched matrix products round differently with the batch's other
        # rows, and a verdict must not depend on which images were read beside it.
        from PIL import Image

        row = metrics.embed_images(self.bundle, [Image.open(io.BytesIO(data)).convert("RGB")])
        texts = metrics.embed_texts(self.bundle, [prompt, *style_captions(prompt)])
        mine, sticker, photo = (row @ texts.T)[0].tolist()
        others = [
            v
            for caption, v in zip(
                self.captions, (row @ self._caption_rows.T)[0].tolist(), strict=True
            )
            if caption != prompt
        ]
        return ToySignals(
            alignment=sum(mine > v for v in others) / len(others) if others else 1.0,
            rank=1 + sum(v >= mine for v in others),
            style=_sigmoid(self.logit_scale * (sticker - photo)),
        )

    def describe(self) -> dict[str, Any]:
        return {"clip_weights": self.weights, "captions": len(self.captions)}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
