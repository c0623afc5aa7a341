"""Alpha as a loss mask (`alpha_mode: "loss_mask"`; kohya's `alpha_mask` is the prior art).

The image is still composited on `background_color` for the VAE, but the loss only counts
where the sticker is: the alpha channel, after the same fit as the pixels (padding is 0), is
area-downsampled to the latent grid and weights each latent cell's squared error; the sum is
divided by the mask's own area, so a small sticker trains as strongly as a large one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALPHA_MODES = ("composite", "loss_mask")


def latent_mask(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """[1, H, W] pixel alpha in [0, 1] -> [1, h, w] at the latent's resolution (area mean)."""
    return F.interpolate(mask[None].float(), size=latent_size, mode="area")[0]


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Per-sample mean squared error [B]; with a [B, 1, h, w] mask, the mean over the masked
    area only (a fully transparent sample contributes 0)."""
    error = F.mse_loss(prediction.float(), target.float(), reduction="none")
    dims = tuple(range(1, error.ndim))
    if mask is None:
        return error.mean(dim=dims)
    weights = mask.to(error.device, error.dtype).expand_as(error)
    return (error * weights).sum(dim=dims) / weights.sum(dim=dims).clamp(min=1e-8)
