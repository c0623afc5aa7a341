"""CLIP metrics shared by every style method: text score, style score, content leakage, diversity.

All four come from one local open_clip model so that numbers of different adapters and recipes
compare. The functions take a *bundle*: anything with `model` (open_clip CLIP), `preprocess`
(PIL -> tensor) and `tokenizer` (texts -> token ids), which is what
`curation.retrieval.clip_models.load_clip` returns; `load_metric_clip` builds one, falling back to
open_clip directly where that module is absent (a bare GPU worker).

Definitions (cosine similarities of L2-normalised embeddings):
- text score: image vs. its content prompt (pass the prompt *without* the style descriptor);
- style score: image vs. the style references, averaged over references;
- content leakage: image vs. the text of what the references *show* (their content captions),
  the highest over captions: a style adapter that copies the reference's subject scores high;
- diversity: mean pairwise cosine distance (1 - cos) among the images of one prompt across seeds.

An image that cannot be opened or preprocessed gets a NaN embedding (and an entry in `errors`)
instead of failing the batch; aggregates ignore NaNs and report how many were lost.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

import training.engine  # noqa: F401  (torchvision shim before open_clip)

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class _RandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def random_init_without_notice() -> Iterator[None]:
    """open_clip warns on the root logger whenever it builds a model without weights. Callers
    that ask for a random init on purpose (a toy CLIP about to be trained, a seeded test model)
    say what the weights are themselves (the report's "random weights" mark), so the console
    line is noise there."""
    root, notice = logging.getLogger(), _RandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def load_metric_clip(
    model_name: str = "tiny-clip", weights_path: str | Path | None = None, *, seed: int = 0
) -> Any:
    """A CLIP bundle for metrics: the platform's loader when present, else open_clip directly."""
    try:
        from curation.retrieval.clip_models import load_clip
    except ImportError:
        return _open_clip_bundle(model_name, weights_path, seed)
    return load_clip(model_name, weights_path, seed=seed)


def _open_clip_bundle(model_name: str, weights_path: str | Path | None, seed: int) -> Any:
    import json
    import tempfile

    import open_clip

    if model_name == "tiny-clip" and model_name not in open_clip.list_models():
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / f"{model_name}.json"
            config.write_text(json.dumps(TINY_CLIP_CONFIG))
            open_clip.add_model_config(config)
    pretrained = str(Path(weights_path).resolve()) if weights_path is not None else None
    with torch.random.fork_rng(devices=[]), random_init_without_notice():
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained
        )
    return SimpleNamespace(
        model=model.eval(),
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(model_name),
        device="cpu",
    )


# ---- embeddings ---------------------------------------------------------------------------------
def _to_rgb(image: Any) -> Any:
    from PIL import Image

    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.copy()
    try:
        from curation.retrieval.images import to_rgb
    except ImportError:
        return image.convert("RGB")
    return to_rgb(image)


def _device(bundle: Any) -> str:
    return getattr(bundle, "device", "cpu")


def embed_images(
    bundle: Any,
    images: Sequence[Any],
    *,
    errors: list[tuple[int, str]] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """(n, d) unit rows; a row is NaN where the image failed (index and reason go to `errors`)."""
    rows: list[torch.Tensor | None] = [None] * len(images)
    tensors: list[tuple[int, torch.Tensor]] = []
    for index, image in enumerate(images):
        try:
            tensors.append((index, bundle.preprocess(_to_rgb(image))))
        except Exception as error:  # one unreadable file must not sink the batch
            label = image if isinstance(image, str | Path) else f"image #{index}"
            if errors is not None:
                errors.append((index, f"{label}: {type(error).__name__}: {error}"))
    for start in range(0, len(tensors), batch_size):
        chunk = tensors[start : start + batch_size]
        batch = torch.stack([t for _, t in chunk]).to(_device(bundle))
        with torch.inference_mode():
            features = bundle.model.encode_image(batch).float()
        for (index, _), row in zip(
            chunk, torch.nn.functional.normalize(features, dim=-1), strict=True
        ):
            rows[index] = row.cpu()
    dim = _embed_dim(bundle, rows)
    nan = torch.full((dim,), float("nan"))
    return torch.stack([r if r is not None else nan for r in rows]) if rows else torch.zeros(0, dim)


def _embed_dim(bundle: Any, rows: Iterable[torch.Tensor | None]) -> int:
    for row in rows:
        if row is not None:
            return int(row.shape[0])
    return int(getattr(bundle, "embed_dim", None) or bundle.model.visual.output_dim)


def embed_texts(bundle: Any, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
    """(n, d) unit rows, one per text."""
    rows = []
    for start in range(0, len(texts), batch_size):
        tokens = bundle.tokenizer(list(texts[start : start + batch_size])).to(_device(bundle))
        with torch.inference_mode():
            features = bundle.model.encode_text(tokens).float()
        rows.append(torch.nn.functional.normalize(features, dim=-1).cpu())
    if not rows:
        return torch.zeros(0, _embed_dim(bundle, []))
    return torch.cat(rows)


# ---- the math on embeddings ---------------------------------------------------------------------
def cosine_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two (n, d) unit matrices (NaN rows stay NaN)."""
    if a.shape != b.shape:
        raise ValueError(f"embeddings: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a * b).sum(-1)


def mean_similarity(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Each image's cosine to the references, averaged over the valid references."""
    valid = references[~torch.isnan(references).any(-1)]
    if len(valid) == 0:
        raise ValueError("references: no reference could be embedded")
    return (images @ valid.T).mean(-1)


def max_similarity(images: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    if len(others) == 0:
        raise ValueError("content: at least one content caption is required")
    return (images @ others.T).max(-1).values


def mean_pairwise_distance(embeddings: torch.Tensor) -> float:
    """Mean of 1 - cos over distinct pairs of valid rows; NaN with fewer than two."""
    valid = embeddings[~torch.isnan(embeddings).any(-1)]
    n = len(valid)
    if n < 2:
        return float("nan")
    similarity = valid @ valid.T
    off_diagonal = similarity.sum() - similarity.diagonal().sum()
    return float(1.0 - off_diagonal / (n * (n - 1)))


# ---- metrics on images --------------------------------------------------------------------------
def text_score(bundle: Any, images: Sequence[Any], prompts: Sequence[str]) -> torch.Tensor:
    """Cosine of each image with its own prompt, shape (n,)."""
    if len(images) != len(prompts):
        raise ValueError(f"prompts: {len(prompts)} prompts for {len(images)} images")
    return cosine_pairs(embed_images(bundle, images), embed_texts(bundle, prompts))


def style_score(bundle: Any, images: Sequence[Any], references: Sequence[Any]) -> torch.Tensor:
    """Mean cosine of each image with the style reference images, shape (n,)."""
    if not references:
        raise ValueError("references: at least one style reference image is required")
    return mean_similarity(embed_images(bundle, images), embed_images(bundle, references))


def content_leakage(
    bundle: Any, images: Sequence[Any], reference_content: Sequence[str]
) -> torch.Tensor:
    """Highest cosine of each image with the references' content captions, shape (n,)."""
    return max_similarity(embed_images(bundle, images), embed_texts(bundle, reference_content))


def diversity(bundle: Any, images_by_prompt: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """Per prompt, the mean pairwise cosine distance of its images across seeds."""
    return {
        prompt: mean_pairwise_distance(embed_images(bundle, images))
        for prompt, images in images_by_prompt.items()
    }


def _nanmean(values: torch.Tensor | Sequence[float]) -> float:
    tensor = torch.as_tensor(values, dtype=torch.float32)
    tensor = tensor[~torch.isnan(tensor)]
    return float(tensor.mean()) if len(tensor) else float("nan")


def evaluate_generations(
    bundle: Any,
    generations: Sequence[tuple[str, Any]],
    *,
    references: Sequence[Any],
    reference_content: Sequence[str] = (),
) -> dict[str, Any]:
    """All four metrics for a GenerationBatch: `generations` are (content prompt, image) pairs.

    Returns means (what a Checkpoint's `metrics` stores) plus `n`, `n_failed` and `errors`.
    Each image is embedded once.
    """
    errors: list[tuple[int, str]] = []
    prompts = [prompt for prompt, _ in generations]
    images = embed_images(bundle, [image for _, image in generations], errors=errors)
    reference_rows = embed_images(bundle, list(references))
    result: dict[str, Any] = {
        "n": len(generations),
        "n_failed": len(errors),
        "errors": [message for _, message in errors],
        "text_score": _nanmean(cosine_pairs(images, embed_texts(bundle, prompts))),
        "style_score": _nanmean(mean_similarity(images, reference_rows)),
        "content_leakage": (
            _nanmean(max_similarity(images, embed_texts(bundle, list(reference_content))))
            if reference_content
            else None
        ),
    }
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_prompt[prompt].append(index)
    per_prompt = [mean_pairwise_distance(images[rows]) for rows in by_prompt.values()]
    measured = [d for d in per_prompt if not math.isnan(d)]
    result["diversity"] = sum(measured) / len(measured) if measured else None
    return result
