"""The training loop: recipe-planned batches through an adapter-wrapped denoiser, with accelerate.

The loop knows no model family: prompt encoding, extra conditioning, noising, the loss target
and the denoiser's forward all come from the base model's `ModelFamily` (`families/`).
Resuming is exact on one process: every source of randomness (python, numpy, torch, the run's
own noise generator), the optimizer, the lr schedule, the EMA and the read position in each
dataset are saved with the weights (`checkpoint.py`), and the recipe plans batches from step
counters alone, so step k+1 after a resume is the step k+1 an uninterrupted run would take.
`run.run_training` is the entry point callers use.
"""

from __future__ import annotations

import logging
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from training.engine.adapters import get_adapter
from training.engine.base_model import load_base_components
from training.engine.checkpoint import restore_training_checkpoint, save_training_checkpoint
from training.engine.config import DATASET_ROLES, ConfigError, TrainConfig
from training.engine.data import (
    EpochBatchOrder,
    ImageCaptionDataset,
    ImageLoadError,
    ImageOptions,
    LatentCache,
    Resolver,
    encode_latent_parameters,
    module_checksum,
    sample_latents,
)
from training.engine.families import Geometry, ModelFamily, cast_conditioning
from training.engine.recipes import BatchPart, build_recipe
from training.engine.run_types import (
    RESUME_MAY_CHANGE,
    CancelFn,
    DataError,
    ProgressFn,
    TrainResult,
)
from training.engine.timesteps import sample_timesteps

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


@dataclass
class TrainingBatch:
    """One micro-batch as the denoiser sees it; `roles`/`timesteps` are what tests assert on.
    `conditioning` holds the family's forward arguments (text embeddings, pooled embeddings,
    SDXL's added_cond_kwargs)."""

    latents: torch.Tensor
    conditioning: dict[str, Any]
    timesteps: torch.Tensor
    weights: torch.Tensor
    roles: list[str]
    image_sha256: list[str] = field(default_factory=list)
    geometry: list[Geometry] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    flipped: list[bool] = field(default_factory=list)


@dataclass
class _Sample:
    sha256: str
    weight: float
    caption: str
    pixels: torch.Tensor | None  # None when the latent cache had it
    parameters: torch.Tensor | None
    geometry: Geometry
    flip: bool = False


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """fp16/bf16 only on CUDA (CPU autocast is slower than fp32 here); bf16 falls back to fp16 on
    GPUs without it."""
    if requested == "no":
        return "no"
    if device.type != "cuda":
        logger.warning(
            "mixed_precision=%s ignored: %s has no fast half precision", requested, device
        )
        return "no"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        logger.warning("bf16 unsupported on this GPU; using fp16")
        return "fp16"
    return requested


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
        from accelerate import Accelerator, PartialState
        from accelerate.state import AcceleratorState
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
        self.datasets = {
            role: ImageCaptionDataset.from_manifest(
                config.datasets[role].manifest,
                config.datasets[role].sha256,
                config.resolution,
                split=config.datasets[role].split,
                resolver=resolver,
                image_root=config.datasets[role].image_root,
                options=ImageOptions(
                    config.image_fit,
                    (
                        config.background_color[0],
                        config.background_color[1],
                        config.background_color[2],
                    ),
                ),
            )
            for role in self.recipe.roles
        }

        wanted = (
            torch.device(device)
            if device
            else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.mixed_precision = resolve_mixed_precision(config.mixed_precision, wanted)
        if PartialState().num_processes == 1:
            # One process may run many jobs (a GPU worker); accelerate keeps its settings in a
            # process-wide singleton that refuses a second mixed-precision setting otherwise.
            AcceleratorState._reset_state()
            if wanted.type == "cuda" and wanted.index is not None:
                # Accelerator() takes the current CUDA device; one worker per GPU names its own.
                torch.cuda.set_device(wanted)
        self.accelerator = Accelerator(
            mixed_precision=self.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            cpu=wanted.type == "cpu",
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

        self.generator = torch.Generator(device=self.device).manual_seed(
            config.seed * 7919 + accelerator.process_index
        )
        self.orders = {
            role: EpochBatchOrder(len(dataset), config.seed * 1009 + DATASET_ROLES.index(role))
            for role, dataset in self.datasets.items()
        }
        self.latent_cache = None
        if config.latent_cache_dir:
            self.latent_cache = LatentCache(
                config.latent_cache_dir,
                module_checksum(self.vae),
                config.resolution,
                next(iter(self.datasets.values())).options.cache_key(),
            )
        self.scaling_factor, self.shift_factor = self.family.latent_scale(self.vae)
        self.step = 0
        self.micro_step = 0
        self.losses: list[float] = []
        self.role_losses: list[dict[str, float]] = []
        self.skipped: list[str] = []
        self._bad: set[str] = set()
        self.checkpoints: list[str] = []

    @property
    def unet(self) -> Any:
        """The (prepared) denoiser under its old name; a transformer for flow families."""
        return self.denoiser

    def _check_family_options(self) -> None:
        for name, reason in self.family.unsupported_options.items():
            value = getattr(self.config, name, None)
            if value not in (None, False, 0):
                raise ConfigError(name, reason)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)

    # ---- data ------------------------------------------------------------------------------
    def _load_sample(self, role: str, index: int, flip: bool = False) -> _Sample:
        """The sample at `index` (pixels, or cached latent parameters), stepping to the next row
        when an image cannot be opened, so one bad file never stops a run."""
        dataset = self.datasets[role]
        for attempt in range(len(dataset)):
            row = dataset.rows[(index + attempt) % len(dataset)]
            if row.image_sha256 in self._bad:
                continue
            if self.latent_cache is not None:
                cached = self.latent_cache.get(row.image_sha256, flip)
                if cached is not None:
                    parameters, geometry = cached
                    return _Sample(
                        row.image_sha256, row.weight, row.caption, None, parameters, geometry, flip
                    )
            try:
                pixels, caption, geometry = dataset.load(
                    (index + attempt) % len(dataset), flip=flip
                )
            except ImageLoadError as error:
                logger.warning("datasets.%s: skipping unreadable sample: %s", role, error)
                self._bad.add(row.image_sha256)
                self.skipped.append(row.image_sha256)
                continue
            return _Sample(row.image_sha256, row.weight, caption, pixels, None, geometry, flip)
        raise DataError(f"datasets.{role}: not one image of {len(dataset)} could be loaded")

    def _part_indices(self, part: BatchPart) -> list[int]:
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        taken = self.orders[part.role].take(part.count * processes)
        return taken[rank * part.count : (rank + 1) * part.count]

    def _encode_pending(self, samples: list[_Sample]) -> None:
        pending = [s for s in samples if s.parameters is None]
        if not pending:
            return
        pixels = torch.stack([s.pixels for s in pending])  # type: ignore[misc]
        encoded = encode_latent_parameters(
            self.vae, pixels.to(self.device, self.weight_dtype)
        ).float()
        for sample, tensor in zip(pending, encoded, strict=True):
            sample.parameters = tensor
            if self.latent_cache is not None:
                self.latent_cache.put(sample.sha256, tensor, sample.geometry, sample.flip)

    @torch.no_grad()
    def draw_batch(self, step: int | None = None, micro_step: int | None = None) -> TrainingBatch:
        """Plan, read and encode the next micro-batch (advances the data position and the RNG)."""
        parts = self.recipe.plan(
            self.step if step is None else step,
            self.micro_step if micro_step is None else micro_step,
        )
        samples: list[_Sample] = []
        roles: list[str] = []
        timesteps, weights = [], []
        count = sum(part.count for part in parts)
        flips = self._coin_flips(count, self.config.random_flip)
        for part in parts:
            for index in self._part_indices(part):
                samples.append(self._load_sample(part.role, index, flips[len(samples)]))
                roles.append(part.role)
        self._encode_pending(samples)
        stacked = torch.stack([s.parameters.to(self.device) for s in samples])  # type: ignore[union-attr]
        latents = sample_latents(
            stacked, self.scaling_factor, self.generator, shift_factor=self.shift_factor
        )
        for part in parts:
            timesteps.append(
                sample_timesteps(part.count, part.t_min, part.t_max, self.generator, self.device)
            )
            weights.extend([part.loss_weight] * part.count)
        sample_weights = torch.tensor(
            [s.weight if self.config.use_sample_weights else 1.0 for s in samples],
            device=self.device,
        )
        geometry = [s.geometry for s in samples]
        dropped = self._coin_flips(len(samples), self.config.caption_dropout)
        captions = ["" if drop else s.caption for s, drop in zip(samples, dropped, strict=True)]
        conditioning = self.family.condition(self.pipeline, captions, geometry, self.device)
        return TrainingBatch(
            latents=latents,
            conditioning=conditioning,
            timesteps=torch.cat(timesteps),
            weights=torch.tensor(weights, device=self.device) * sample_weights,
            roles=roles,
            image_sha256=[s.sha256 for s in samples],
            geometry=geometry,
            captions=captions,
            flipped=[s.flip for s in samples],
        )

    def _coin_flips(self, count: int, probability: float) -> list[bool]:
        """`count` draws that are True with `probability`, from the run's saved generator (so a
        resumed run flips and drops exactly as an uninterrupted one); none drawn when off."""
        if probability <= 0:
            return [False] * count
        draws = torch.rand(count, generator=self.generator, device=self.generator.device)
        return (draws < probability).tolist()

    # ---- steps -----------------------------------------------------------------------------
    def _micro_step(self, batch: TrainingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample loss, per-sample objective weight: min-SNR-γ, or ones)."""
        noise = torch.randn(
            batch.latents.shape,
            generator=self.generator,
            device=self.device,
            dtype=batch.latents.dtype,
        )
        if self.config.noise_offset:
            # Offset noise: a per-channel constant lets the model shift overall brightness
            # (flat sticker backgrounds), which zero-mean noise cannot teach.
            offset = torch.randn(
                (*batch.latents.shape[:2], *([1] * (batch.latents.ndim - 2))),
                generator=self.generator,
                device=self.device,
                dtype=batch.latents.dtype,
            )
            noise = noise + self.config.noise_offset * offset
        noisy, model_timesteps, target = self.family.noise(
            self.noise_scheduler, batch.latents, noise, batch.timesteps
        )
        prediction = self.family.predict(
            self.denoiser,
            noisy,
            model_timesteps,
            cast_conditioning(batch.conditioning, self.weight_dtype),
        )
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(
            dim=tuple(range(1, prediction.ndim))
        )
        if self.config.min_snr_gamma is None:
            return per_sample, torch.ones_like(per_sample)
        objective = self.family.min_snr_weights(
            self.noise_scheduler, batch.timesteps, float(self.config.min_snr_gamma)
        )
        return per_sample, objective.to(per_sample.device, per_sample.dtype)

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
            if progress is not None:
                progress(self.step, total, loss)
            if self.step % self.config.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint()
                saved_at = self.step
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

    # ---- checkpoints -----------------------------------------------------------------------
    def unwrapped_denoiser(self) -> Any:
        return self.accelerator.unwrap_model(self.denoiser)

    def named_trainable(self) -> dict[str, torch.nn.Parameter]:
        """The trainable parameters by name, in the optimizer's (and the EMA's) order: an
        adapter may return them in another order than `named_parameters` walks them."""
        names = {id(p): name for name, p in self.unwrapped_denoiser().named_parameters()}
        return {names[id(p)]: p for p in self.trainable}

    def lineage_record(self) -> dict[str, Any]:
        import accelerate
        import diffusers
        import peft

        config = self.config
        return {
            "code_version": code_version(),
            **self.lineage,
            "step": self.step,
            "total_steps": config.steps,
            "recipe": config.recipe,
            "adapter": config.adapter,
            "base_model": config.base_model,
            "training_options": {
                **config.training_options(),
                "mixed_precision_used": self.mixed_precision,
            },
            "family": {
                "name": self.family.name,
                "pipeline_class": self.family.pipeline_class,
                "denoiser": self.family.denoiser,
                "prediction_type": self.family.prediction_type(self.noise_scheduler),
                "noise_axis": self.family.noise_axis,
                "num_train_timesteps": self.num_train_timesteps,
                "variant": self.model_folder.variant,
            },
            "datasets": {
                role: {
                    "manifest": spec.manifest,
                    "sha256": spec.sha256,
                    "version_id": spec.version_id,
                }
                for role, spec in config.datasets.items()
            },
            "resumed_from": self.resumed_from,
            "libraries": {
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "peft": peft.__version__,
                "accelerate": accelerate.__version__,
            },
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save_checkpoint(self) -> Path | None:
        path = save_training_checkpoint(self)
        if path is not None:
            self.checkpoints.append(str(path))
        return path

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint this config (up to RESUME_MAY_CHANGE fields) produced."""
        restore_training_checkpoint(self, path, RESUME_MAY_CHANGE)
        self.resumed_from = str(path)
