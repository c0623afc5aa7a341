"""Measure a model in the toy world: generate its prompts × seeds, score with the toy CLIP.

Text alignment is scored against the bare content prompt, style similarity against sticker
references the model never trained on; arms compared on the same prompts and seeds get paired
differences, every interval resampled by prompt.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from training.engine import metrics
from training.engine.stats.cluster_bootstrap import cluster_difference, cluster_mean

TOY_SAMPLER = {"steps": 12, "guidance_scale": 3.0, "resolution": 32, "scheduler": "ddim"}


def load_prompts(world: dict[str, Any], *, held_out: bool | None = None) -> list[dict[str, Any]]:
    prompts = json.loads(Path(world["prompts"]).read_text())
    return [p for p in prompts if held_out is None or p["held_out"] == held_out]


def references(world: dict[str, Any]) -> list[Image.Image]:
    folder = Path(world["datasets"]["style_references"]["image_root"]) / "images"
    return [Image.open(path).convert("RGB") for path in sorted(folder.glob("*.png"))]


def toy_clip(world: dict[str, Any]) -> Any:
    return metrics.load_metric_clip("tiny-clip", world["clip_weights"])


def generate_arm(
    world: dict[str, Any],
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    checkpoint: str | Path | None = None,
    style_suffix: str | None = None,
) -> list[tuple[str, int, Image.Image]]:
    from training.engine.generation import generate

    settings = {**TOY_SAMPLER, "style_suffix": style_suffix}
    results = generate(
        list(prompts),
        list(seeds),
        settings,
        checkpoint=checkpoint,
        base_model=None if checkpoint else world["base_model"],
        device="cpu",
        batch_size=16,
    )
    return [(r.prompt, r.seed, r.image) for r in results]


def score_arm(
    bundle: Any,
    generated: Sequence[tuple[str, int, Image.Image]],
    style_refs: Sequence[Image.Image],
) -> dict[str, Any]:
    """Per-image text and style scores, per-prompt diversity, and their clustered means."""
    prompts = [p for p, _, _ in generated]
    images = [image for _, _, image in generated]
    rows = metrics.embed_images(bundle, images)
    text = metrics.cosine_pairs(rows, metrics.embed_texts(bundle, prompts)).tolist()
    style = metrics.mean_similarity(rows, metrics.embed_images(bundle, list(style_refs))).tolist()
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_prompt[prompt].append(index)
    diversity = {p: metrics.mean_pairwise_distance(rows[i]) for p, i in by_prompt.items()}
    result: dict[str, Any] = {
        "prompts": prompts,
        "text": text,
        "style": style,
        "diversity_by_prompt": diversity,
    }
    for name, values, clusters in (
        ("text_score", text, prompts),
        ("style_score", style, prompts),
        ("diversity", list(diversity.values()), list(diversity)),
    ):
        interval = cluster_mean(values, clusters)
        result[name] = interval.to_dict() if interval else None
    return result


def paired(
    new: dict[str, Any], old: dict[str, Any], key: str, *, relative: bool = False
) -> dict[str, Any] | None:
    """new minus old on one metric ("text", "style" or "diversity"), paired by prompt."""
    if key == "diversity":
        a, a_c = list(new["diversity_by_prompt"].values()), list(new["diversity_by_prompt"])
        b, b_c = list(old["diversity_by_prompt"].values()), list(old["diversity_by_prompt"])
    else:
        a, a_c, b, b_c = new[key], new["prompts"], old[key], old["prompts"]
    interval = cluster_difference(a, a_c, b, b_c, relative=relative)
    return interval.to_dict() if interval else None


# CLIP's own temperature: at this scale a logsumexp over captions is close to their best match.
_ZERO_SHOT_SCALE = 100.0


def prompt_following(bundle: Any, generated: Sequence[tuple[str, int, Image.Image]]) -> dict:
    """Does the model draw what its prompt names? Zero-shot, with the toy CLIP as the reader.

    Each image is read against every caption of the world: per attribute (shape, colour,
    count) the value whose captions match it best (a logsumexp over the captions sharing that
    value) is its reading, and `rank` is where its own prompt falls among all captions (1 is
    best). Accuracies come with intervals resampled by prompt, against the chance of guessing.
    """
    import torch

    from training.engine.toy_world import scenes

    contents = scenes.all_contents()
    by_caption = {c.caption: c for c in contents}
    prompts = [p for p, _, _ in generated]
    unknown = sorted({p for p in prompts if p not in by_caption})
    if unknown:
        raise ValueError(f"prompts not in the toy world: {unknown[:3]}")
    images = metrics.embed_images(bundle, [image for _, _, image in generated])
    texts = metrics.embed_texts(bundle, [c.caption for c in contents])
    similarity = (
        _ZERO_SHOT_SCALE
        * torch.nn.functional.normalize(images, dim=-1)
        @ torch.nn.functional.normalize(texts, dim=-1).T
    )
    truth = [by_caption[p] for p in prompts]
    result: dict[str, Any] = {"images": len(prompts), "prompts": len(set(prompts))}
    for attribute in ("shape", "colour", "count"):
        values = sorted({getattr(c, attribute) for c in contents}, key=str)
        columns = [
            similarity[:, [i for i, c in enumerate(contents) if getattr(c, attribute) == v]]
            for v in values
        ]
        reading = torch.stack([torch.logsumexp(col, dim=1) for col in columns], dim=1)
        picked = [values[i] for i in reading.argmax(dim=1).tolist()]
        correct = [float(p == getattr(t, attribute)) for p, t in zip(picked, truth, strict=True)]
        interval = cluster_mean(correct, prompts)
        result[attribute] = {
            **(interval.to_dict() if interval else {}),
            "chance": round(1 / len(values), 4),
        }
    own = torch.tensor([contents.index(t) for t in truth])
    ranks = (similarity > similarity[torch.arange(len(own)), own][:, None]).sum(dim=1) + 1
    result["median_rank"] = float(ranks.float().median())
    result["candidates"] = len(contents)
    return result
