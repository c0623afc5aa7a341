"""The training loop: recipe-planned batches through an adapter-wrapped UNet, with accelerate.

`run_training(config, progress=, should_cancel=, resume_from=)` is the entry point the Django job
and the CLI call. Resuming is exact on one process: every source of randomness (python, numpy,
torch, the run's own noise generator), the optimizer, the lr schedule, the EMA and the read
position in each dataset are saved with the weights, and the recipe plans batches from step
counters alone, so step k+1 after a resume is the step k+1 an uninterrupted run would take.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from training.engine.adapters import get_adapter
from training.engine.base_model import load_base_components
from training.engine.checkpoint import (
    python_numpy_rng_state,
    read_checkpoint_config,
    restore_python_numpy_rng,
    restore_torch_rng,
    torch_rng_tensors,
    write_checkpoint_folder,
)
from training.engine.config import DATASET_ROLES, ConfigError, TrainConfig
from training.engine.data import (
    EpochBatchOrder,
    ImageCaptionDataset,
    ImageLoadError,
    LatentCache,
    Resolver,
    encode_latent_parameters,
    module_checksum,
    sample_latents,
)
from training.engine.recipes import BatchPart, build_recipe
from training.engine.timesteps import sample_timesteps

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]
CancelFn = Callable[[], bool]

# Fields a resumed run may change: where it writes and how often, not what it computes.
RESUME_MAY_CHANGE = frozenset(
    {"output_dir", "checkpoint_every", "keep_checkpoints", "latent_cache_dir"}
)


class DataError(RuntimeError):
    """A dataset yielded no usable sample at all."""


@dataclass
class TrainResult:
    status: str  # "completed" or "cancelled"
    step: int
    total_steps: int
    checkpoint_path: str | None
    checkpoints: list[str]
    losses: list[float]
    role_losses: list[dict[str, float]]
    skipped_images: list[str]
    device: str
    mixed_precision: str
    output_dir: str
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingBatch:
    """One micro-batch as the UNet sees it; `roles`/`timesteps` are what tests assert on."""

    latents: torch.Tensor
    encoder_hidden_states: torch.Tensor
    timesteps: torch.Tensor
    weights: torch.Tensor
    roles: list[str]
    image_sha256: list[str] = field(default_factory=list)


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
    """AdamW, fused where the device supports it (about 3x faster optimizer step, DESIGN §6b)."""
    options: _AdamWOptions = {
        "lr": config.learning_rate,
        "betas": (config.adam_beta1, config.adam_beta2),
        "weight_decay": config.adam_weight_decay,
        "eps": config.adam_epsilon,
    }
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
        self.noise_scheduler = components["noise_scheduler"]
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.recipe = build_recipe(config, self.num_train_timesteps)
        self.datasets = {
            role: ImageCaptionDataset.from_manifest(
                config.datasets[role].manifest,
                config.datasets[role].sha256,
                config.resolution,
                split=config.datasets[role].split,
                resolver=resolver,
                image_root=config.datasets[role].image_root,
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
        unet = components["unet"]
        self.adapter = get_adapter(config.adapter)
        try:
            self.trainable = self.adapter.apply(unet, dict(config.adapter_params))
        except ValueError as error:
            raise ConfigError("adapter_params", str(error)) from error
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.vae = components["vae"].requires_grad_(False).eval().to(self.device)
        self.text_encoder = components["text_encoder"].requires_grad_(False).eval().to(self.device)
        if (
            self.weight_dtype != torch.float32
        ):  # frozen parts run in half precision, UNet stays fp32
            self.vae.to(dtype=self.weight_dtype)
            self.text_encoder.to(dtype=self.weight_dtype)
        self.tokenizer = components["tokenizer"]
        unet.to(self.device)
        optimizer = build_optimizer(self.trainable, config)
        processes = accelerator.num_processes
        lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * processes,
            num_training_steps=config.steps * processes,
        )
        self.unet, self.optimizer, self.lr_scheduler = accelerator.prepare(
            unet, optimizer, lr_scheduler
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
                config.latent_cache_dir, module_checksum(self.vae), config.resolution
            )
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.step = 0
        self.micro_step = 0
        self.losses: list[float] = []
        self.role_losses: list[dict[str, float]] = []
        self.skipped: list[str] = []
        self._bad: set[str] = set()
        self.checkpoints: list[str] = []

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)

    # ---- data ------------------------------------------------------------------------------
    def _load_sample(
        self, role: str, index: int
    ) -> tuple[str, float, str, torch.Tensor | None, torch.Tensor | None]:
        """(sha, weight, caption, pixels, cached latent parameters) for `index`, stepping to the
        next row when an image cannot be opened, so one bad file never stops a run."""
        dataset = self.datasets[role]
        for attempt in range(len(dataset)):
            row = dataset.rows[(index + attempt) % len(dataset)]
            if row.image_sha256 in self._bad:
                continue
            if self.latent_cache is not None:
                cached = self.latent_cache.get(row.image_sha256)
                if cached is not None:
                    return row.image_sha256, row.weight, row.caption, None, cached
            try:
                pixels, caption = dataset[(index + attempt) % len(dataset)]
            except ImageLoadError as error:
                logger.warning("datasets.%s: skipping unreadable sample: %s", role, error)
                self._bad.add(row.image_sha256)
                self.skipped.append(row.image_sha256)
                continue
            return row.image_sha256, row.weight, caption, pixels, None
        raise DataError(f"datasets.{role}: not one image of {len(dataset)} could be loaded")

    def _part_indices(self, part: BatchPart) -> list[int]:
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        taken = self.orders[part.role].take(part.count * processes)
        return taken[rank * part.count : (rank + 1) * part.count]

    @torch.no_grad()
    def draw_batch(self, step: int | None = None, micro_step: int | None = None) -> TrainingBatch:
        """Plan, read and encode the next micro-batch (advances the data position and the RNG)."""
        parts = self.recipe.plan(
            self.step if step is None else step,
            self.micro_step if micro_step is None else micro_step,
        )
        samples, roles, timesteps, weights = [], [], [], []
        for part in parts:
            for index in self._part_indices(part):
                samples.append(self._load_sample(part.role, index))
                roles.append(part.role)
        parameters: list[torch.Tensor | None] = [s[4] for s in samples]
        pending = [i for i, s in enumerate(samples) if s[4] is None]
        if pending:
            pending_pixels: list[torch.Tensor] = []
            for i in pending:
                loaded = samples[i][3]
                assert loaded is not None  # a sample without cached latents carries its pixels
                pending_pixels.append(loaded)
            pixels = torch.stack(pending_pixels).to(self.device, self.weight_dtype)
            encoded = encode_latent_parameters(self.vae, pixels).float()
            for row_index, tensor in zip(pending, encoded, strict=True):
                parameters[row_index] = tensor
                if self.latent_cache is not None:
                    self.latent_cache.put(samples[row_index][0], tensor)
        stacked = torch.stack([p.to(self.device) for p in parameters])  # type: ignore[union-attr]
        latents = sample_latents(stacked, self.scaling_factor, self.generator)
        for part in parts:
            timesteps.append(
                sample_timesteps(part.count, part.t_min, part.t_max, self.generator, self.device)
            )
            weights.extend([part.loss_weight] * part.count)
        sample_weights = torch.tensor(
            [s[1] if self.config.use_sample_weights else 1.0 for s in samples], device=self.device
        )
        tokens = self.tokenizer(
            [s[2] for s in samples],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        hidden = self.text_encoder(tokens, return_dict=False)[0]
        return TrainingBatch(
            latents=latents,
            encoder_hidden_states=hidden,
            timesteps=torch.cat(timesteps),
            weights=torch.tensor(weights, device=self.device) * sample_weights,
            roles=roles,
            image_sha256=[s[0] for s in samples],
        )

    # ---- steps -----------------------------------------------------------------------------
    def _micro_step(self, batch: TrainingBatch) -> torch.Tensor:
        noise = torch.randn(
            batch.latents.shape,
            generator=self.generator,
            device=self.device,
            dtype=batch.latents.dtype,
        )
        noisy = self.noise_scheduler.add_noise(batch.latents, noise, batch.timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(batch.latents, noise, batch.timesteps)
        else:
            target = noise
        prediction = self.unet(
            noisy,
            batch.timesteps,
            batch.encoder_hidden_states.to(self.weight_dtype),
            return_dict=False,
        )[0]
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(
            dim=(1, 2, 3)
        )
        return per_sample

    def train_step(self) -> tuple[float, dict[str, float]]:
        """One optimizer step (gradient_accumulation_steps micro-batches); returns the mean loss
        and the mean unweighted loss per dataset role."""
        accelerator = self.accelerator
        self.unet.train()
        total = 0.0
        per_role: dict[str, list[float]] = {}
        for _ in range(self.config.gradient_accumulation_steps):
            batch = self.draw_batch()
            with accelerator.accumulate(self.unet):
                per_sample = self._micro_step(batch)
                loss = (per_sample * batch.weights).mean()
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
    def _named_trainable(self) -> dict[str, torch.nn.Parameter]:
        unet = self.accelerator.unwrap_model(self.unet)
        ids = {id(p) for p in self.trainable}
        return {name: p for name, p in unet.named_parameters() if id(p) in ids}

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
        from safetensors.torch import save_file

        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return None

        def fill(folder: Path) -> None:
            self.config.to_json(folder / "config.json")
            (folder / "lineage.json").write_text(
                json.dumps(self.lineage_record(), indent=2, default=str)
            )
            (folder / "adapter").mkdir()
            self.adapter.save(accelerator.unwrap_model(self.unet), folder / "adapter")
            if self.ema is not None:
                (folder / "ema").mkdir()
                names = list(self._named_trainable())
                shadow = {
                    n: t.detach().cpu().contiguous()
                    for n, t in zip(names, self.ema.shadow_params, strict=True)
                }
                save_file(shadow, folder / "ema" / "ema.safetensors")
                scalars = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
                (folder / "ema" / "ema_state.json").write_text(json.dumps(scalars, indent=2))
            state = folder / "training_state"
            state.mkdir()
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "lr_scheduler": self.lr_scheduler.state_dict(),
                    "grad_scaler": scaler,
                },
                state / "optimizer.pt",
            )
            trainer_state = {
                "step": self.step,
                "micro_step": self.micro_step,
                "data_position": {role: order.state_dict() for role, order in self.orders.items()},
                "losses": self.losses,
                "role_losses": self.role_losses,
                "skipped_images": self.skipped,
                "rng": python_numpy_rng_state(),
            }
            (state / "trainer.json").write_text(json.dumps(trainer_state))
            save_file(
                torch_rng_tensors(self.generator),
                state / f"rng_{accelerator.process_index}.safetensors",
            )

        path = write_checkpoint_folder(
            self.config.output_dir, self.step, fill, self.config.keep_checkpoints
        )
        self.checkpoints.append(str(path))
        return path

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint this config (up to RESUME_MAY_CHANGE fields) produced."""
        from safetensors.torch import load_file

        path = Path(path)
        saved = read_checkpoint_config(path).to_dict()
        current = self.config.to_dict()
        for name in sorted(current):
            if name not in RESUME_MAY_CHANGE and saved.get(name) != current[name]:
                raise ConfigError(
                    name,
                    f"differs from the checkpoint being resumed ({path}): "
                    f"{saved.get(name)!r} there, {current[name]!r} here",
                )
        self.adapter.load(self.accelerator.unwrap_model(self.unet), path / "adapter")
        state = torch.load(
            path / "training_state" / "optimizer.pt", map_location="cpu", weights_only=True
        )
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state["grad_scaler"] is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["grad_scaler"])
        if self.ema is not None:
            ema_file = path / "ema" / "ema.safetensors"
            if not ema_file.is_file():
                raise FileNotFoundError(f"{ema_file}: use_ema is on but the checkpoint has no EMA")
            shadow = load_file(ema_file, device=str(self.device))
            scalars = json.loads((path / "ema" / "ema_state.json").read_text())
            names = list(self._named_trainable())
            self.ema.load_state_dict({**scalars, "shadow_params": [shadow[n] for n in names]})
        trainer_state = json.loads((path / "training_state" / "trainer.json").read_text())
        self.step = trainer_state["step"]
        self.micro_step = trainer_state["micro_step"]
        for role, position in trainer_state["data_position"].items():
            self.orders[role].load_state_dict(position)
        self.losses = list(trainer_state["losses"])
        self.role_losses = list(trainer_state["role_losses"])
        self.skipped = list(trainer_state["skipped_images"])
        self._bad = set(self.skipped)
        restore_python_numpy_rng(trainer_state["rng"])
        rank = self.accelerator.process_index
        rng_file = path / "training_state" / f"rng_{rank}.safetensors"
        if rng_file.is_file():
            restore_torch_rng(load_file(rng_file), self.generator)
        else:  # other ranks of a multi-GPU run: a fresh stream per (seed, rank, step)
            self.generator.manual_seed(self.config.seed * 7919 + rank + 104729 * self.step)
        self.resumed_from = str(path)


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
    from training.engine.checkpoint import latest_checkpoint

    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if config.recipe == "styledrop_iterative":
        # One engine run per iteration with generation and feedback in between; human feedback
        # needs a callback, so the Django job calls run_styledrop_iterative_training directly.
        from training.engine.styledrop_iterative import run_styledrop_iterative_training

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
