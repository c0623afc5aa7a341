"""The optimizer a run steps: AdamW (fused where the device has it) or bitsandbytes' 8-bit AdamW."""

from __future__ import annotations

import logging
from typing import TypedDict

import torch

from training.engine.config import TrainConfig

logger = logging.getLogger(__name__)


class _AdamWOptions(TypedDict):
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    eps: float


def build_optimizer(
    parameters: list[torch.nn.Parameter], config: TrainConfig
) -> torch.optim.Optimizer:
    """AdamW, fused where the device supports it (about 3x faster optimizer step, DESIGN §6b),
    or bitsandbytes' 8-bit AdamW (`optimizer: adamw_8bit`, validated to be installed)."""
    options: _AdamWOptions = {
        "lr": config.learning_rate,
        "betas": (config.adam_beta1, config.adam_beta2),
        "weight_decay": config.adam_weight_decay,
        "eps": config.adam_epsilon,
    }
    if config.optimizer == "adamw_8bit":
        import bitsandbytes

        optimizer: torch.optim.Optimizer = bitsandbytes.optim.AdamW8bit(parameters, **options)
        return optimizer
    try:
        return torch.optim.AdamW(parameters, fused=True, **options)
    except (RuntimeError, ValueError, TypeError) as error:
        logger.info("fused AdamW unavailable (%s); using the default implementation", error)
        return torch.optim.AdamW(parameters, **options)
