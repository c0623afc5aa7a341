"""open_clip models loaded offline, and the checksum that names their EmbeddingSpace.

Nothing here downloads: a model is an open_clip architecture name plus a local weights file
(`.safetensors` or an open_clip `.pt` checkpoint), a `local-dir:` folder holding
`open_clip_config.json` beside its weights, or no weights at all (random init from a seed, which
is what tests and the demo use with the tiny architecture registered below).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import open_clip
import torch
from PIL import Image

from curation.retrieval.images import to_rgb
from training.engine.metrics import random_init_without_notice

TINY_CLIP = "tiny-clip"
_CONFIG_DIR = Path(__file__).with_name("model_configs")
_LOCAL_DIR = "local-dir:"
_CHUNK = 1 << 20


@dataclass
class ClipBundle:
    """A loaded model with what is needed to feed it and to name the vectors it makes."""

    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    model_name: str
    weights_sha256: str
    embed_dim: int
    image_size: int
    device: str = "cpu"

    def space_key(self) -> dict[str, Any]:
        """What makes two sets of vectors comparable: same architecture, weights and input size."""
        return {
            "model_name": self.model_name,
            "weights_sha256": self.weights_sha256,
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
        }


def register_tiny_clip() -> str:
    """Make the tiny architecture known to open_clip (idempotent); returns its name."""
    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR / f"{TINY_CLIP}.json")
    return TINY_CLIP


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Checksum of parameters in key order: names a random init as exactly as a file would."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _local_dir_sha256(folder: Path) -> str:
    # The folder's config decides the architecture, so it is part of the identity too.
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name == "open_clip_config.json" or path.suffix in {".safetensors", ".bin", ".pth"}:
            digest.update(path.name.encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _image_size(model: torch.nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def load_clip(
    model_name: str,
    weights_path: str | Path | None,
    device: str = "cpu",
    *,
    seed: int = 0,
) -> ClipBundle:
    """Build `model_name` and load local weights from `weights_path` bit-exactly.

    `weights_path` may be a `.safetensors` file, an open_clip `.pt` checkpoint, a
    `local-dir:/folder` (whose config then decides the architecture) or None for a random init
    drawn from `seed` without disturbing the caller's RNG state.
    """
    if model_name == TINY_CLIP:
        register_tiny_clip()
    weights = str(weights_path) if weights_path is not None else None
    if weights is not None and weights.startswith(_LOCAL_DIR):
        folder = Path(weights[len(_LOCAL_DIR) :])
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{folder}: no open_clip_config.json in this local-dir folder")
        model, _, preprocess = open_clip.create_model_and_transforms(weights, device=device)
        tokenizer = open_clip.get_tokenizer(weights)
        checksum = _local_dir_sha256(folder)
    else:
        if model_name not in open_clip.list_models():
            raise ValueError(
                f"model_name {model_name!r}: not an open_clip architecture "
                f"(known: {', '.join(open_clip.list_models()[:8])}, …)"
            )
        if weights is not None:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: weights file not found")
            if path.suffix not in {".safetensors", ".pt", ".pth", ".bin"}:
                raise ValueError(f"{path}: expected .safetensors or an open_clip .pt checkpoint")
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(path.resolve()), device=device
            )
            checksum = file_sha256(path)
        else:
            with torch.random.fork_rng(devices=[]), random_init_without_notice():
                torch.manual_seed(seed)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=None, device=device
                )
            checksum = state_dict_sha256(model)
        tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()
    return ClipBundle(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        model_name=model_name,
        weights_sha256=checksum,
        embed_dim=int(model.visual.output_dim),
        image_size=_image_size(model),
        device=device,
    )


def save_weights(bundle_or_model: ClipBundle | torch.nn.Module, path: str | Path) -> Path:
    """Write a model's weights as safetensors, the format `load_clip` reads back bit-exactly."""
    from safetensors.torch import save_file

    model = bundle_or_model.model if isinstance(bundle_or_model, ClipBundle) else bundle_or_model
    path = Path(path)
    # safetensors refuses shared storage; clone so tied tensors become separate entries.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path


def save_local_dir(bundle: ClipBundle, folder: str | Path) -> str:
    """Write a `local-dir:` folder (config + safetensors); returns the `local-dir:` string."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": open_clip.get_model_config(bundle.model_name)}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_weights(bundle, folder / "open_clip_model.safetensors")
    return f"{_LOCAL_DIR}{folder.resolve()}"


def _normalise(features: torch.Tensor) -> np.ndarray:
    vectors = torch.nn.functional.normalize(features.float(), dim=-1)
    return vectors.cpu().numpy().astype(np.float32, copy=False)


def encode_image_tensors(bundle: ClipBundle, batch: torch.Tensor) -> np.ndarray:
    """Forward already preprocessed images; float32, unit length rows."""
    # Module.__getattr__ is typed as Tensor | Module; open_clip's CLIP has no annotations to use.
    encode_image = cast(Callable[[torch.Tensor], torch.Tensor], bundle.model.encode_image)
    with torch.inference_mode():
        return _normalise(encode_image(batch.to(bundle.device)))


def encode_texts(bundle: ClipBundle, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Text embeddings as float32 unit vectors, one row per text."""
    encode_text = cast(Callable[[torch.Tensor], torch.Tensor], bundle.model.encode_text)
    rows = [np.zeros((0, bundle.embed_dim), np.float32)]
    for start in range(0, len(texts), batch_size):
        tokens = bundle.tokenizer(list(texts[start : start + batch_size])).to(bundle.device)
        with torch.inference_mode():
            rows.append(_normalise(encode_text(tokens)))
    return np.concatenate(rows)


def encode_images(
    bundle: ClipBundle, images: Sequence[Image.Image], batch_size: int = 64
) -> np.ndarray:
    """Image embeddings as float32 unit vectors; images are composited to RGB first."""
    rows = [np.zeros((0, bundle.embed_dim), np.float32)]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = torch.stack([bundle.preprocess(to_rgb(image)) for image in chunk])
        rows.append(encode_image_tensors(bundle, batch))
    return np.concatenate(rows)
