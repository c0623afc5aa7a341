"""What every checkpoint's `lineage.json` records about the run that wrote it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import torch


def code_version() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None


def lineage_record(trainer: Any) -> dict[str, Any]:
    """The caller's lineage, then the run: step, recipe, adapter, base model and family, data
    options, datasets, where it was initialised or resumed from, world size and torch threads,
    library versions."""
    import accelerate
    import diffusers
    import peft

    config = trainer.config
    family = trainer.family
    return {
        "code_version": code_version(),
        **trainer.lineage,
        "step": trainer.step,
        "total_steps": config.steps,
        "recipe": config.recipe,
        "adapter": config.adapter,
        "base_model": config.base_model,
        "training_options": {
            **config.training_options(),
            "mixed_precision_used": trainer.mixed_precision,
        },
        "family": {
            "name": family.name,
            "pipeline_class": family.pipeline_class,
            "denoiser": family.denoiser,
            "prediction_type": family.prediction_type(trainer.noise_scheduler),
            "noise_axis": family.noise_axis,
            "num_train_timesteps": trainer.num_train_timesteps,
            "variant": trainer.model_folder.variant,
        },
        "datasets": {
            role: {
                "manifest": spec.manifest,
                "sha256": spec.sha256,
                "version_id": spec.version_id,
            }
            for role, spec in config.datasets.items()
        },
        "initialized_from": config.init_from,
        "data": {
            role: {
                "buckets": {
                    f"{width}x{height}": len(members)
                    for (width, height), members in sorted(dataset.buckets()[0].items())
                }
            }
            for role, dataset in trainer.datasets.items()
        },
        "resumed_from": trainer.resumed_from,
        "world_size": trainer.accelerator.num_processes,
        # Intra-op threads change float reduction order, so two runs of the same code, data and
        # seed at different thread counts (OMP_NUM_THREADS) differ in the last bits of their
        # weights; recorded so such a difference is explainable. Read at this checkpoint's save:
        # a resumed run may have trained its earlier steps at another count.
        "torch_threads": torch.get_num_threads(),
        "libraries": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "accelerate": accelerate.__version__,
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
