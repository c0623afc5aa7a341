"""The training loop: recipe-planned batches through an adapter-wrapped denoiser, with accelerate.

The loop knows no model family: prompt encoding, extra conditioning, noising, the loss target
and the denoiser's forward all come from the base model's `ModelFamily` (`families/`).
Resuming is exact on one process: every source of randomness (python, numpy, torch, the run's
own noise generator), the optimizer, the lr schedule, the EMA and the read position in each
dataset are saved with the weights (`checkpoint.py`), and the recipe plans batches from step
counters alone, so step k+1 after a resume is the step k+1 an uninterrupted run would take.
`run.run_training` is the entry point callers use. The data side is `batches.py`, placement and
precision `placement.py`, the optimizer `optim.py`, checkpoints `checkpoint.py`, lineage
`lineage.py`.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.engine.adapters import get_adapter
from training.engine.base_model import load_base_components
from training.engine.batches import BatchSource, BucketGroup, TrainingBatch, batch_orders
from training.engine.checkpoint import (
    initialize_from_checkpoint,
    is_checkpoint,
    restore_training_checkpoint,
    save_training_checkpoint,
)
from training.engine.config import ConfigError, TrainConfig
from training.engine.data import (
    BucketBatchOrder,
    EpochBatchOrder,
    ImageCaptionDataset,
    ImageOptions,
    LatentCache,
    Resolver,
    module_checksum,
)
from training.engine.data.alpha import masked_mse
from training.engine.families import ModelFamily, cast_conditioning
from training.engine.lineage import code_version, lineage_record
from training.engine.optim import build_optimizer
from training.engine.placement import build_accelerator
from training.engine.previews import PreviewSettings, write_preview
from training.engine.recipes import build_recipe
from training.engine.run_types import (
    RESUME_MAY_CHANGE,
    CancelFn,
    DataError,
    ProgressFn,
    TrainResult,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RESUME_MAY_CHANGE",
    "DataError",
    "Trainer",
    "TrainingBatch",
    "TrainResult",
    "build_optimizer",
    "code_version",
]


class Trainer:
    """One training run: built from a config, optionally restored from a checkpoint, then `run`."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        lineage: dict[str, Any] | None = None,
        resolver: Resolver | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        from diffusers.optimization import get_scheduler

        config.validate()
        self.config = config
        self.lineage = dict(lineage or {})
        self.resumed_from: str | None = None
        components = load_base_components(config.base_model)
        self.family: ModelFamily = components["family"]
        self.model_folder = components["model_folder"]
        self._check_family_options()
        self.noise_scheduler = components["noise_scheduler"]
        self.num_train_timesteps = self.family.num_train_timesteps(self.noise_scheduler)
        self.recipe = build_recipe(config, self.num_train_timesteps)
        options = ImageOptions(
            config.image_fit,
            (config.background_color[0], config.background_color[1], config.background_color[2]),
            config.bucket_step,
            config.bucket_max_aspect,
            config.alpha_mode,
        )
        datasets = {
            role: ImageCaptionDataset.from_manifest(
                config.datasets[role].manifest,
                config.datasets[role].sha256,
                config.resolution,
                split=config.datasets[role].split,
                resolver=resolver,
                image_root=config.datasets[role].image_root,
                options=options,
            )
            for role in self.recipe.roles
        }

        self.accelerator, self.mixed_precision = build_accelerator(
            device,
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
        )
        accelerator = self.accelerator
        self.device = accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            self.mixed_precision, torch.float32
        )

        self._seed_everything(config.seed)
        denoiser = components[self.family.denoiser]
        self.adapter = get_adapter(config.adapter)
        try:
            self.trainable = self.adapter.apply(denoiser, dict(config.adapter_params))
        except ValueError as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError("adapter_params", str(error)) from error
        if config.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        # Frozen parts run in half precision under mixed precision; the denoiser stays fp32.
        for name, module in components.items():
            if name == self.family.denoiser or not isinstance(module, torch.nn.Module):
                continue
            module.requires_grad_(False).eval().to(self.device)
            if self.weight_dtype != torch.float32:
                module.to(dtype=self.weight_dtype)
        self.vae = components["vae"]
        denoiser.to(self.device)
        # The family's pipeline encodes prompts exactly as it will at generation time.
        self.pipeline = self.family.pipeline(components)
        optimizer = build_optimizer(self.trainable, config)
        processes = accelerator.num_processes
        lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * processes,
            num_training_steps=config.steps * processes,
        )
        self.denoiser, self.optimizer, self.lr_scheduler = accelerator.prepare(
            denoiser, optimizer, lr_scheduler
        )
        self.ema = None
        if config.use_ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.trainable, decay=config.ema_decay)
            self.ema.to(self.device)

        if config.image_fit == "bucket":
            self._check_bucket_step(self.vae, denoiser)
        orders, unreadable = batch_orders(config, datasets)
        latent_cache = None
        if config.latent_cache_dir:
            latent_cache = LatentCache(
                config.latent_cache_dir,
                module_checksum(self.vae),
                config.resolution,
                options.cache_key(),
            )
        self.batches = BatchSource(
            config=config,
            recipe=self.recipe,
            datasets=datasets,
            orders=orders,
            family=self.family,
            pipeline=self.pipeline,
            vae=self.vae,
            generator=torch.Generator(device=self.device).manual_seed(
                config.seed * 7919 + accelerator.process_index
            ),
            device=self.device,
            weight_dtype=self.weight_dtype,
            process_index=accelerator.process_index,
            num_processes=processes,
            latent_cache=latent_cache,
        )
        self.batches.set_skipped(unreadable)
        self.previews = PreviewSettings.from_dict(config.previews, config.resolution)
        self.step = 0
        self.micro_step = 0
        self.losses: list[float] = []
        self.role_losses: list[dict[str, float]] = []
        self.checkpoints: list[str] = []
        if config.init_from:
            initialize_from_checkpoint(self, config.init_from)

    @property
    def unet(self) -> Any:
        """The (prepared) denoiser under its old name; a transformer for flow families."""
        return self.denoiser

    @property
    def datasets(self) -> dict[str, ImageCaptionDataset]:
        return self.batches.datasets

    @property
    def orders(self) -> dict[str, EpochBatchOrder | BucketBatchOrder]:
        return self.batches.orders

    @property
    def generator(self) -> torch.Generator:
        return self.batches.generator

    @property
    def latent_cache(self) -> LatentCache | None:
        return self.batches.latent_cache

    @property
    def skipped(self) -> list[str]:
        return self.batches.skipped

    def _check_family_options(self) -> None:
        for name, reason in self.family.unsupported_options.items():
            value = getattr(self.config, name, None)
            if value not in (None, False, 0):
                raise ConfigError(name, reason)

    def _check_bucket_step(self, vae: Any, denoiser: Any) -> None:
        """Every bucket side must reach a whole latent the denoiser can downsample."""
        multiple = self.family.pixel_multiple(vae, denoiser)
        if self.config.bucket_step % multiple:
            raise ConfigError(
                "bucket_step",
                f"must be a multiple of {multiple} for this base model (VAE and "
                f"{self.family.denoiser} downsampling), got {self.config.bucket_step}",
            )

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)

    def draw_batch(self, step: int | None = None, micro_step: int | None = None) -> TrainingBatch:
        """Plan, read and encode the next micro-batch (advances the data position and the RNG)."""
        return self.batches.draw(
            self.step if step is None else step,
            self.micro_step if micro_step is None else micro_step,
        )

    # ---- steps -----------------------------------------------------------------------------
    def _micro_step(self, batch: TrainingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample loss, per-sample objective weight: min-SNR-γ, or ones). The denoiser runs
        once per bucket group; the losses come back in batch order."""
        per_sample = torch.cat(
            [
                self._group_loss(group, batch.timesteps[group.start : group.stop])
                for group in batch.groups
            ]
        )
        if self.config.min_snr_gamma is None:
            return per_sample, torch.ones_like(per_sample)
        objective = self.family.min_snr_weights(
            self.noise_scheduler, batch.timesteps, float(self.config.min_snr_gamma)
        )
        return per_sample, objective.to(per_sample.device, per_sample.dtype)

    def _group_loss(self, group: BucketGroup, timesteps: torch.Tensor) -> torch.Tensor:
        latents = group.latents
        noise = torch.randn(
            latents.shape, generator=self.generator, device=self.device, dtype=latents.dtype
        )
        if self.config.noise_offset:
            # Offset noise: a per-channel constant lets the model shift overall brightness
            # (flat sticker backgrounds), which zero-mean noise cannot teach.
            offset = torch.randn(
                (*latents.shape[:2], *([1] * (latents.ndim - 2))),
                generator=self.generator,
                device=self.device,
                dtype=latents.dtype,
            )
            noise = noise + self.config.noise_offset * offset
        noisy, model_timesteps, target = self.family.noise(
            self.noise_scheduler, latents, noise, timesteps
        )
        prediction = self.family.predict(
            self.denoiser,
            noisy,
            model_timesteps,
            cast_conditioning(group.conditioning, self.weight_dtype),
        )
        return masked_mse(prediction, target, group.masks)

    def train_step(self) -> tuple[float, dict[str, float]]:
        """One optimizer step (gradient_accumulation_steps micro-batches); returns the mean loss
        and the mean unweighted loss per dataset role."""
        accelerator = self.accelerator
        self.denoiser.train()
        total = 0.0
        per_role: dict[str, list[float]] = {}
        for _ in range(self.config.gradient_accumulation_steps):
            batch = self.draw_batch()
            with accelerator.accumulate(self.denoiser):
                per_sample, objective = self._micro_step(batch)
                loss = (per_sample * objective * batch.weights).mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.micro_step += 1
            total += loss.item()
            detached = per_sample.detach().cpu()
            for role in set(batch.roles):
                mask = torch.tensor([r == role for r in batch.roles])
                per_role.setdefault(role, []).append(detached[mask].mean().item())
        if self.ema is not None:
            self.ema.step(self.trainable)
        self.step += 1
        mean_loss = total / self.config.gradient_accumulation_steps
        return mean_loss, {role: float(np.mean(values)) for role, values in per_role.items()}

    def run(
        self, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None
    ) -> TrainResult:
        started = time.perf_counter()
        total = self.config.steps
        status = "completed"
        saved_at = self.step if self.resumed_from else -1
        while self.step < total:
            if should_cancel is not None and should_cancel():
                status = "cancelled"
                break
            loss, role_losses = self.train_step()
            self.losses.append(loss)
            self.role_losses.append(role_losses)
            self._maybe_preview()
            if progress is not None:
                progress(self.step, total, loss)
            if self.step % self.config.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint()
                saved_at = self.step
        self.batches.close_prefetch()
        if status == "cancelled" and self.step > 0 and saved_at != self.step:
            self.save_checkpoint()  # so a cancelled run can be resumed where it stopped
        self.accelerator.wait_for_everyone()
        return TrainResult(
            status=status,
            step=self.step,
            total_steps=total,
            checkpoint_path=self.checkpoints[-1] if self.checkpoints else self.resumed_from,
            checkpoints=list(self.checkpoints),
            losses=list(self.losses),
            role_losses=list(self.role_losses),
            skipped_images=list(self.skipped),
            device=str(self.device),
            mixed_precision=self.mixed_precision,
            output_dir=self.config.output_dir,
            seconds=time.perf_counter() - started,
        )

    def _maybe_preview(self) -> None:
        """The validation preview of this step, when one is due (before the step is reported,
        so the caller's progress callback finds it)."""
        if not self.previews.every or self.step % self.previews.every:
            return
        if not self.accelerator.is_main_process:
            return
        self.denoiser.eval()  # no adapter dropout in samples; train_step sets train() again
        with self.accelerator.autocast():
            write_preview(
                self.pipeline,
                self.previews,
                self.config.resolution,
                self.config.output_dir,
                self.step,
            )

    # ---- checkpoints -----------------------------------------------------------------------
    def unwrapped_denoiser(self) -> Any:
        return self.accelerator.unwrap_model(self.denoiser)

    def named_trainable(self) -> dict[str, torch.nn.Parameter]:
        """The trainable parameters by name, in the optimizer's (and the EMA's) order: an
        adapter may return them in another order than `named_parameters` walks them."""
        names = {id(p): name for name, p in self.unwrapped_denoiser().named_parameters()}
        return {names[id(p)]: p for p in self.trainable}

    def lineage_record(self) -> dict[str, Any]:
        return lineage_record(self)

    def save_checkpoint(self) -> Path | None:
        path = save_training_checkpoint(self)
        if path is not None:
            # keep_checkpoints may just have deleted older folders: list only what exists.
            self.checkpoints = [p for p in self.checkpoints if is_checkpoint(p)]
            self.checkpoints.append(str(path))
        return path

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint this config (up to RESUME_MAY_CHANGE fields) produced."""
        restore_training_checkpoint(self, path, RESUME_MAY_CHANGE)
        self.resumed_from = str(path)
