"""Training configuration: plain dataclasses that round-trip through JSON and validate themselves.

The same JSON is what the admin form produces, what `python -m training.engine train` reads and
what every checkpoint stores next to its weights, so a checkpoint says exactly how it was made.
Validation errors name the field (dotted path) and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine.errors import ConfigError

__all__ = ["ConfigError", "DatasetSpec", "TrainConfig"]

RECIPES = ("domain", "sequential", "style_tailoring", "styledrop_iterative")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
OPTIMIZERS = ("adamw", "adamw_8bit")
ALPHA_MODES = ("composite", "loss_mask")
IMAGE_FITS = ("center_crop", "pad", "bucket")
# "references" (styledrop_iterative) comes last: loop.py seeds batch order by the role's index.
DATASET_ROLES = ("domain", "alignment", "style", "references")


@dataclass
class DatasetSpec:
    """One frozen DatasetVersion: its Parquet manifest, the checksum it was frozen with, and
    where its images live when the manifest holds relative `image_path`s."""

    manifest: str
    sha256: str
    image_root: str | None = None
    split: str | None = "train"
    version_id: str | None = None

    def validate(self, prefix: str) -> None:
        if not self.manifest:
            raise ConfigError(f"{prefix}.manifest", "is required")
        digest = (self.sha256 or "").lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"{prefix}.sha256", f"must be 64 hex characters, got {self.sha256!r}")


@dataclass
class TrainConfig:
    """Everything a run needs; defaults are sensible for LoRA on a Stable-Diffusion-sized UNet."""

    recipe: str
    base_model: str
    output_dir: str
    datasets: dict[str, DatasetSpec]
    adapter: str = "lora"
    adapter_params: dict[str, Any] = field(default_factory=dict)
    resolution: int = 512
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    steps: int = 1000
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    use_ema: bool = False
    ema_decay: float = 0.9999
    checkpoint_every: int = 500
    keep_checkpoints: int | None = None
    latent_cache_dir: str | None = None
    # DataLoader worker processes that open, decode and fit images ahead of the step (0 = in
    # the training process), and how many micro-batches each reads ahead; neither changes
    # what a run reads (data/prefetch.py)
    num_workers: int = 0
    prefetch_batches: int = 2
    use_sample_weights: bool = True
    # a checkpoint folder (same adapter, same base model) whose adapter weights start this run;
    # its optimizer and step do not carry over. How a trained checkpoint of any adapter seeds
    # the next round, and how styledrop_iterative chains its iterations.
    init_from: str | None = None
    # ---- data and objective options (validated here, recorded in lineage) ----
    # "center_crop": shorter side to resolution, centre cut (SDXL's time_ids say where);
    # "pad": the whole image scaled into the square, padded losslessly with background_color;
    # "bucket": aspect-ratio buckets of about resolution² pixels (data/buckets.py)
    image_fit: str = "center_crop"
    # bucket: sides are multiples of bucket_step pixels; no bucket is more than
    # bucket_max_aspect:1 either way (more extreme images are padded into the last one)
    bucket_step: int = 64
    bucket_max_aspect: float = 2.0
    # alpha is composited on this RGB colour before encoding (stickers: white)
    background_color: list[int] = field(default_factory=lambda: [255, 255, 255])
    # "composite": alpha only composites on background_color; "loss_mask": the loss is also
    # weighted by alpha at latent resolution and normalised by its area (data/alpha.py)
    alpha_mode: str = "composite"
    # probability of mirroring each sample left-right (drawn from the run's seeded generator)
    random_flip: float = 0.0
    # probability of training a sample on the empty caption (for classifier-free guidance)
    caption_dropout: float = 0.0
    # per-channel offset noise scale (Guttenberg 2023); 0 = off
    noise_offset: float = 0.0
    # min-SNR-γ loss weighting (Hang et al. 2023); None = off; not for flow matching
    min_snr_gamma: float | None = None
    # "adamw" (fused where the device has it) or "adamw_8bit" (bitsandbytes)
    optimizer: str = "adamw"
    # style_tailoring: alignment samples get t in [t_s, T), style samples t in [0, t_s), on the
    # family's noise axis: the DDPM timestep (sd, sdxl) or sigma = t_s / T (sd3 flow matching),
    # so high noise (content) is alignment on every family; see docs/model_families.md
    t_s: int = 500
    # style_tailoring: fraction of every batch drawn from the alignment set
    mix_ratio: float = 0.5
    # per-role multipliers on each sample's loss (style_tailoring, sequential)
    loss_weights: dict[str, float] = field(default_factory=lambda: {"alignment": 1.0, "style": 1.0})
    # sequential: the phases in order, and optionally how many steps each gets (default: equal)
    sequential_order: list[str] = field(default_factory=lambda: ["alignment", "style"])
    phase_steps: list[int] | None = None
    # validation previews: {"every": N steps (0 = off), "prompts": [...], "seeds": [...],
    # "sampler": {...SamplerSettings}} written as grids under output_dir/previews (previews.py)
    previews: dict[str, Any] = field(default_factory=dict)
    # styledrop_iterative: iterations, feedback, prompts/seeds... (styledrop_settings.py)
    styledrop: dict[str, Any] = field(default_factory=dict)

    # ---- JSON --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError("config", f"must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field (known: {', '.join(sorted(known))})")
        for name in ("recipe", "base_model", "output_dir", "datasets"):
            if name not in data:
                raise ConfigError(name, "is required")
        values = dict(data)
        datasets = values["datasets"]
        if not isinstance(datasets, dict):
            raise ConfigError("datasets", "must be an object mapping role -> dataset")
        parsed: dict[str, DatasetSpec] = {}
        spec_fields = {f.name for f in dataclasses.fields(DatasetSpec)}
        for role, spec in datasets.items():
            if isinstance(spec, DatasetSpec):
                parsed[role] = spec
                continue
            if not isinstance(spec, dict):
                raise ConfigError(f"datasets.{role}", "must be an object")
            extra = sorted(set(spec) - spec_fields)
            if extra:
                raise ConfigError(f"datasets.{role}.{extra[0]}", "unknown field")
            for required in ("manifest", "sha256"):
                if required not in spec:
                    raise ConfigError(f"datasets.{role}.{required}", "is required")
            parsed[role] = DatasetSpec(**spec)
        values["datasets"] = parsed
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError("config", f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(data)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    # ---- validation --------------------------------------------------------------------------
    def required_roles(self) -> list[str]:
        if self.recipe == "domain":
            return ["domain"]
        if self.recipe == "sequential":
            return list(self.sequential_order)
        if self.recipe == "styledrop_iterative":
            return ["references"]
        return ["alignment", "style"]

    def validate(self, num_train_timesteps: int | None = None) -> None:
        """Raise ConfigError on the first bad field; `num_train_timesteps` (T, known once the base
        model's scheduler is read) bounds t_s from above."""
        if self.recipe not in RECIPES:
            raise ConfigError("recipe", f"{self.recipe!r} is not one of {', '.join(RECIPES)}")
        if not self.base_model:
            raise ConfigError("base_model", "is required")
        if not self.output_dir:
            raise ConfigError("output_dir", "is required")
        if not self.adapter:
            raise ConfigError("adapter", "is required")
        if not isinstance(self.adapter_params, dict):
            raise ConfigError("adapter_params", "must be an object")
        _positive_int("resolution", self.resolution)
        if self.resolution % 8:
            raise ConfigError("resolution", f"must be a multiple of 8, got {self.resolution}")
        _positive_int("batch_size", self.batch_size)
        _positive_int("gradient_accumulation_steps", self.gradient_accumulation_steps)
        _positive_int("steps", self.steps)
        _positive_int("checkpoint_every", self.checkpoint_every)
        if self.keep_checkpoints is not None:
            _positive_int("keep_checkpoints", self.keep_checkpoints)
        if self.init_from is not None and (
            not isinstance(self.init_from, str) or not self.init_from.strip()
        ):
            raise ConfigError("init_from", "must be a checkpoint folder path or null")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be a non-negative integer, got {self.seed!r}")
        _positive_float("learning_rate", self.learning_rate)
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ConfigError(
                "lr_scheduler", f"{self.lr_scheduler!r} is not one of {LR_SCHEDULERS}"
            )
        if not isinstance(self.lr_warmup_steps, int) or self.lr_warmup_steps < 0:
            raise ConfigError("lr_warmup_steps", "must be a non-negative integer")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(name, f"must be in [0, 1), got {value}")
        if self.adam_weight_decay < 0:
            raise ConfigError("adam_weight_decay", "must be >= 0")
        _positive_float("adam_epsilon", self.adam_epsilon)
        _positive_float("max_grad_norm", self.max_grad_norm)
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError("mixed_precision", f"must be one of {MIXED_PRECISION}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError("ema_decay", f"must be in (0, 1), got {self.ema_decay}")
        self._validate_options()
        from training.engine.previews import PreviewSettings

        PreviewSettings.from_dict(self.previews, self.resolution)
        self._validate_datasets()
        self._validate_recipe(num_train_timesteps)

    def _validate_options(self) -> None:
        if self.image_fit not in IMAGE_FITS:
            raise ConfigError("image_fit", f"{self.image_fit!r} is not one of {IMAGE_FITS}")
        _positive_int("bucket_step", self.bucket_step)
        if self.image_fit == "bucket" and (
            self.bucket_step % 8 or self.resolution % self.bucket_step
        ):
            raise ConfigError(
                "bucket_step",
                f"must be a multiple of 8 that divides resolution ({self.resolution}), "
                f"got {self.bucket_step}",
            )
        aspect = self.bucket_max_aspect
        if isinstance(aspect, bool) or not isinstance(aspect, int | float) or not 1 <= aspect <= 8:
            raise ConfigError("bucket_max_aspect", f"must be a number in [1, 8], got {aspect!r}")
        for name, least in (("num_workers", 0), ("prefetch_batches", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(name, f"must be an integer >= {least}, got {value!r}")
        if self.alpha_mode not in ALPHA_MODES:
            raise ConfigError("alpha_mode", f"{self.alpha_mode!r} is not one of {ALPHA_MODES}")
        colour = self.background_color
        if (
            not isinstance(colour, list | tuple)
            or len(colour) != 3
            or any(
                not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= 255 for c in colour
            )
        ):
            raise ConfigError(
                "background_color", f"must be three integers 0-255 (R, G, B), got {colour!r}"
            )
        for name in ("random_flip", "caption_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(name, f"must be a probability in [0, 1], got {value!r}")
        offset = self.noise_offset
        if isinstance(offset, bool) or not isinstance(offset, int | float) or not 0 <= offset < 1:
            raise ConfigError("noise_offset", f"must be in [0, 1), got {offset!r}")
        gamma = self.min_snr_gamma
        if gamma is not None and (
            isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma > 0
        ):
            raise ConfigError("min_snr_gamma", f"must be a positive number or null, got {gamma!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"{self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.optimizer == "adamw_8bit":
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                raise ConfigError(
                    "optimizer",
                    "'adamw_8bit' needs bitsandbytes, which is not installed here "
                    "(pip install bitsandbytes on a CUDA host), or use 'adamw'",
                )

    def training_options(self) -> dict[str, Any]:
        """The data and objective options, as lineage records them."""
        return {
            name: getattr(self, name)
            for name in (
                "image_fit",
                "bucket_step",
                "bucket_max_aspect",
                "background_color",
                "alpha_mode",
                "random_flip",
                "caption_dropout",
                "noise_offset",
                "min_snr_gamma",
                "optimizer",
                "gradient_checkpointing",
                "mixed_precision",
            )
        }

    def _validate_datasets(self) -> None:
        if not isinstance(self.datasets, dict):
            raise ConfigError("datasets", "must map role -> dataset")
        for role, spec in self.datasets.items():
            if role not in DATASET_ROLES:
                raise ConfigError(f"datasets.{role}", f"unknown role (known: {DATASET_ROLES})")
            spec.validate(f"datasets.{role}")
        for role in self.required_roles():
            if role not in self.datasets:
                raise ConfigError(
                    f"datasets.{role}", f"is required by the {self.recipe!r} recipe but missing"
                )

    def _validate_recipe(self, num_train_timesteps: int | None) -> None:
        if self.recipe == "styledrop_iterative":
            from training.engine.styledrop_settings import StyleDropIterativeSettings

            StyleDropIterativeSettings.from_config(self)
        elif self.styledrop:
            raise ConfigError("styledrop", "is only read by the 'styledrop_iterative' recipe")
        for role, weight in self.loss_weights.items():
            if role not in DATASET_ROLES:
                raise ConfigError(f"loss_weights.{role}", "unknown role")
            if not weight >= 0:
                raise ConfigError(f"loss_weights.{role}", f"must be >= 0, got {weight}")
        if self.recipe == "style_tailoring":
            if not isinstance(self.t_s, int) or self.t_s <= 0:
                raise ConfigError("t_s", f"must be an integer > 0, got {self.t_s!r}")
            if num_train_timesteps is not None and self.t_s >= num_train_timesteps:
                raise ConfigError(
                    "t_s",
                    f"must be < the base model's num_train_timesteps ({num_train_timesteps}), "
                    f"got {self.t_s}",
                )
            if not 0 < self.mix_ratio < 1:
                raise ConfigError("mix_ratio", f"must be in (0, 1), got {self.mix_ratio}")
        if self.recipe == "sequential":
            order = self.sequential_order
            if not order or len(set(order)) != len(order):
                raise ConfigError("sequential_order", f"must list distinct roles, got {order}")
            for role in order:
                if role not in ("alignment", "style", "domain"):
                    raise ConfigError("sequential_order", f"unknown role {role!r}")
            if self.phase_steps is not None:
                if len(self.phase_steps) != len(order):
                    raise ConfigError(
                        "phase_steps",
                        f"needs one entry per phase ({len(order)}), got {self.phase_steps}",
                    )
                if any(not isinstance(n, int) or n <= 0 for n in self.phase_steps):
                    raise ConfigError("phase_steps", "entries must be positive integers")
                if sum(self.phase_steps) != self.steps:
                    raise ConfigError(
                        "phase_steps",
                        f"must sum to steps ({self.steps}), got {sum(self.phase_steps)}",
                    )
            elif self.steps < len(order):
                raise ConfigError("steps", f"must be >= the number of phases ({len(order)})")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def _positive_float(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigError(name, f"must be a positive number, got {value!r}")
