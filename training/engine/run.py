"""`run_training`: the one entry point the Django job and the CLI call for any recipe.

Single-run recipes go to the loop's Trainer; `styledrop_iterative` drives one engine run per
iteration with generation and feedback in between (human feedback needs a callback, so the
Django job calls `run_styledrop_iterative_training` directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.engine.checkpoint import latest_checkpoint
from training.engine.config import TrainConfig
from training.engine.data import Resolver
from training.engine.loop import Trainer
from training.engine.run_types import CancelFn, ProgressFn, TrainResult
from training.engine.styledrop_iterative import run_styledrop_iterative_training


def run_training(
    config: TrainConfig | dict[str, Any],
    *,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    resume_from: str | Path | None = None,
    lineage: dict[str, Any] | None = None,
    resolver: Resolver | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train per `config` (a TrainConfig or its dict), from scratch or from `resume_from`
    (a checkpoint folder, or "latest" for the newest one in output_dir)."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if config.recipe == "styledrop_iterative":
        return run_styledrop_iterative_training(
            config,
            progress=progress,
            should_cancel=should_cancel,
            resume_from=resume_from,
            lineage=lineage,
            resolver=resolver,
            device=device,
        )
    trainer = Trainer(config, lineage=lineage, resolver=resolver, device=device)
    if resume_from == "latest":
        resume_from = latest_checkpoint(config.output_dir)
    if resume_from is not None:
        trainer.restore(resume_from)
    return trainer.run(progress=progress, should_cancel=should_cancel)
