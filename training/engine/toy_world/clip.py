"""A tiny CLIP trained contrastively on the toy world's own image–caption pairs.

Within the toy world this makes CLIP scores measurements: text alignment tells whether an image
shows the count, colour and shape its caption names, and image–image similarity tells a sticker
from a photograph. Captions come in three forms, the bare content ("two red circles") and
"a photo of …" / "a sticker of …", so the bare prompt the evaluation scores against matches an
image of either look and the look itself is learnt from the style words. Several images share
one caption in a batch, so targets are soft: every image of the same caption is a positive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.engine.metrics import TINY_CLIP_CONFIG, _open_clip_bundle
from training.engine.stats.cluster_bootstrap import cluster_mean

CLIP_WEIGHTS = "open_clip_model.safetensors"


def caption_forms(caption: str, look: str) -> list[str]:
    return [caption, f"a {look} of {caption}"]


def train_clip(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    looks: Sequence[str],
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Any:
    """Train the tiny-clip architecture from a seeded init; returns an open_clip bundle."""
    bundle = _open_clip_bundle("tiny-clip", None, seed)
    model = bundle.model.train()
    pixels = torch.stack([bundle.preprocess(image.convert("RGB")) for image in images])
    texts = sorted(
        {form for c, look in zip(captions, looks, strict=True) for form in caption_forms(c, look)}
    )
    text_index = {text: i for i, text in enumerate(texts)}
    tokens = bundle.tokenizer(texts)
    forms = [
        [text_index[f] for f in caption_forms(c, look)]
        for c, look in zip(captions, looks, strict=True)
    ]
    content_of = {text_index[t]: t.split(" of ", 1)[-1] for t in texts}
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, learning_rate, total_steps=steps, pct_start=0.1
    )
    for step in range(steps):
        batch = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        chosen = [forms[int(i)][int(rng.integers(len(forms[int(i)])))] for i in batch]
        unique = sorted(set(chosen))
        image_features = torch.nn.functional.normalize(model.encode_image(pixels[batch]), dim=-1)
        text_features = torch.nn.functional.normalize(model.encode_text(tokens[unique]), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T
        # A text is right for an image when it names the same content in a form that fits it:
        # the bare caption fits both looks, "a photo of" only photographs.
        target = torch.tensor(
            [
                [
                    float(
                        content_of[t] == content_of[c]
                        and (" of " not in texts[t] or texts[t].startswith(f"a {looks[int(i)]} "))
                    )
                    for t in unique
                ]
                for c, i in zip(chosen, batch, strict=True)
            ]
        )
        image_loss = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        column = target.T
        text_loss = -(column / column.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
        loss = (image_loss + text_loss) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"toy CLIP step {step + 1}/{steps}: loss {loss.item():.3f}")
    bundle.model = model.eval()
    return bundle


def text_alignment_report(
    bundle: Any, images: Sequence[Image.Image], captions: Sequence[str], candidates: Sequence[str]
) -> dict[str, Any]:
    """Top-1 caption retrieval among `candidates` and the cosine margin (own minus mean other),
    both with intervals resampled by caption."""
    from training.engine import metrics

    image_rows = metrics.embed_images(bundle, list(images))
    text_rows = metrics.embed_texts(bundle, list(candidates))
    similarity = (image_rows @ text_rows.T).numpy()
    index = {c: i for i, c in enumerate(candidates)}
    own = np.array([index[c] for c in captions])
    correct = (similarity.argmax(1) == own).astype(float)
    own_similarity = similarity[np.arange(len(own)), own]
    others = (similarity.sum(1) - own_similarity) / (len(candidates) - 1)
    margin = own_similarity - others
    accuracy = cluster_mean(list(correct), list(captions))
    margin_ci = cluster_mean(list(margin), list(captions))
    return {
        "images": len(images),
        "candidates": len(candidates),
        "chance": 1.0 / len(candidates),
        "top1": round(float(correct.mean()), 4),
        "top1_ci": [round(accuracy.low, 4), round(accuracy.high, 4)] if accuracy else None,
        "margin": round(float(margin.mean()), 4),
        "margin_ci": [round(margin_ci.low, 4), round(margin_ci.high, 4)] if margin_ci else None,
    }


def save_clip(bundle: Any, folder: Path, info: dict[str, Any]) -> Path:
    """Weights as safetensors (load with EVAL_CLIP_MODEL=tiny-clip, EVAL_CLIP_WEIGHTS=file),
    the open_clip config beside them (a `local-dir:` folder too) and the toy-world marker."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in bundle.model.state_dict().items()}
    save_file(state, str(folder / CLIP_WEIGHTS))
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CLIP_CONFIG}, indent=2)
    )
    (folder / "toy_world.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    return folder / CLIP_WEIGHTS
