"""Latents and their cache: the VAE encoder is a large share of a step on real models and its
output never changes for a frozen image under the same options."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from training.engine.families.base import Geometry

logger = logging.getLogger(__name__)


def module_checksum(module: torch.nn.Module) -> str:
    """sha256 over parameter names and bytes: identifies the exact VAE a cached latent came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def encode_latent_parameters(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Mean and log-variance of the VAE posterior, [B, 2C, h, w]: deterministic, so cacheable."""
    return vae.encode(pixels).latent_dist.parameters


def sample_latents(
    parameters: torch.Tensor,
    scaling_factor: float,
    generator: torch.Generator | None,
    shift_factor: float = 0.0,
) -> torch.Tensor:
    """Draw from the cached posterior the way diffusers' `latent_dist.sample()` does, then
    normalise as the family's pipeline does ((z - shift) * scale; shift is 0 before SD3)."""
    mean, logvar = torch.chunk(parameters.float(), 2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    noise = torch.randn(
        mean.shape, generator=generator, device=generator.device if generator else mean.device
    ).to(mean.device)
    return (mean + std * noise - shift_factor) * scaling_factor


class LatentCache:
    """VAE posterior parameters, the image's Geometry and (alpha_mode "loss_mask") its
    latent-resolution alpha mask on disk, one safetensors file per (VAE checksum, resolution,
    options, image, flip)."""

    def __init__(
        self, root: str | Path, vae_checksum: str, resolution: int, variant: str = ""
    ) -> None:
        # Everything that changes a latent is in the path: VAE, resolution, `variant` (fit with
        # its bucket grid, background, alpha mode: ImageOptions.cache_key) and per file the
        # flip. The bucket and the crop or padding are pure functions of the image and those,
        # so a changed option never reads a stale latent.
        folder = f"r{resolution}" + (f"-{variant}" if variant else "")
        self.directory = Path(root) / vae_checksum[:16] / folder
        self.hits = 0
        self.misses = 0

    def path(self, image_sha256: str, flip: bool = False) -> Path:
        name = f"{image_sha256}-flip" if flip else image_sha256
        return self.directory / image_sha256[:2] / f"{name}.safetensors"

    def get(
        self, image_sha256: str, flip: bool = False
    ) -> tuple[torch.Tensor, Geometry, torch.Tensor | None] | None:
        from safetensors.torch import load_file

        path = self.path(image_sha256, flip)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            tensors = load_file(path)
            parameters, geometry = (
                tensors["parameters"],
                Geometry.from_list(tensors["geometry"].tolist()),
            )
            mask = tensors.get("mask")
        except Exception as error:  # a torn, corrupt or older-format file is re-encoded
            logger.warning("latent cache: unusable %s (%s); re-encoding", path, error)
            self.misses += 1
            return None
        self.hits += 1
        return parameters, geometry, mask

    def put(
        self,
        image_sha256: str,
        parameters: torch.Tensor,
        geometry: Geometry,
        flip: bool = False,
        mask: torch.Tensor | None = None,
    ) -> None:
        from safetensors.torch import save_file

        path = self.path(image_sha256, flip)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        tensors = {
            "parameters": parameters.detach().cpu().contiguous(),
            "geometry": torch.tensor(geometry.as_list(), dtype=torch.int64),
        }
        if mask is not None:
            tensors["mask"] = mask.detach().cpu().contiguous()
        save_file(tensors, temporary)
        os.replace(temporary, path)  # atomic: concurrent runs never read half a file
