"""Diffusion timestep sampling in a window, and the per-batch alignment/style split.

Style Tailoring trains one model on two distributions split along the diffusion trajectory:
high-noise timesteps [t_s, T) decide layout and content, so they learn from the alignment set;
low-noise timesteps [0, t_s) decide texture and finish, so they learn from the style set.
"""

from __future__ import annotations

import math

import torch


def sample_timesteps(
    count: int,
    low: int,
    high: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """`count` integer timesteps uniform in [low, high).

    `torch.randint` takes no tensor bounds, so draw floats and truncate; the clamp guards the
    float32 rounding of values just under `high`.
    """
    if not 0 <= low < high:
        raise ValueError(f"timestep window [{low}, {high}) is empty or negative")
    gen_device = generator.device if generator is not None else device
    draws = torch.rand(count, generator=generator, device=gen_device)
    steps = (low + draws * (high - low)).long().clamp_(max=high - 1)
    return steps.to(device) if device is not None else steps


def alignment_count(micro_step: int, batch_size: int, ratio: float) -> int:
    """Alignment samples in micro-batch `micro_step` so that, summed over any run prefix, their
    share equals `ratio` to within one sample (the rest of the batch is style).

    A fixed round(batch_size * ratio) would drift for ratios the batch size cannot express
    (0.3 of 4); a cumulative quota honours the ratio exactly over the run, deterministically.
    """
    before = math.floor(micro_step * batch_size * ratio + 1e-9)
    after = math.floor((micro_step + 1) * batch_size * ratio + 1e-9)
    return after - before
