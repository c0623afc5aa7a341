"""Settings of the `styledrop_iterative` recipe: the `styledrop` object of a TrainConfig.

They live apart from `config.py` because only this recipe reads them, and apart from the driver
(`styledrop_iterative.py`) so that validating a config never loads a model. Errors name the dotted
field (`styledrop.top_k`) like every other config error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from training.engine.errors import ConfigError

if TYPE_CHECKING:
    from training.engine.config import TrainConfig
    from training.engine.generation import SamplerSettings

FEEDBACK_MODES = ("clip", "human")
PREFIX = "styledrop"


@dataclass
class StyleDropIterativeSettings:
    """How many rounds, what to generate between them and how to select.

    Every iteration trains `TrainConfig.steps` steps. `prompts` x `seeds` are generated after each
    iteration but the last; `feedback` picks which of them the next iteration trains on.
    """

    iterations: int = 2
    feedback: str = "clip"
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    # clip feedback: keep the best top_k and/or those scoring >= threshold (at least one of them)
    top_k: int | None = None
    threshold: float | None = None
    keep_references: bool = True
    min_selected: int = 1
    # None: adapter_params.style_descriptor when the adapter has one, else no descriptor
    style_descriptor: str | None = None
    # generation.SamplerSettings fields; resolution defaults to the run's resolution
    sampler: dict[str, Any] = field(default_factory=dict)
    clip_model: str = "ViT-B-32"
    clip_weights: str | None = None
    generation_batch_size: int = 4

    @classmethod
    def from_config(cls, config: TrainConfig) -> StyleDropIterativeSettings:
        data = config.styledrop
        if not isinstance(data, dict):
            raise ConfigError(PREFIX, f"must be an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{PREFIX}.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(known))})"
            )
        settings = cls(**data)
        settings.validate(config)
        return settings

    def validate(self, config: TrainConfig) -> None:
        _int_at_least("iterations", self.iterations, 1)
        if self.feedback not in FEEDBACK_MODES:
            raise ConfigError(
                f"{PREFIX}.feedback", f"must be one of {FEEDBACK_MODES}, got {self.feedback!r}"
            )
        if not isinstance(self.prompts, list) or not all(
            isinstance(p, str) and p.strip() for p in self.prompts
        ):
            raise ConfigError(f"{PREFIX}.prompts", "must be a list of non-empty strings")
        if self.iterations > 1 and not self.prompts:
            raise ConfigError(
                f"{PREFIX}.prompts",
                f"is required with iterations > 1 (what to generate between iterations), "
                f"got iterations={self.iterations}",
            )
        if (
            not isinstance(self.seeds, list)
            or not self.seeds
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds)
            or len(set(self.seeds)) != len(self.seeds)
        ):
            raise ConfigError(
                f"{PREFIX}.seeds",
                f"must be a non-empty list of distinct integers >= 0, got {self.seeds!r}",
            )
        if self.feedback == "clip":
            if self.top_k is None and self.threshold is None:
                raise ConfigError(f"{PREFIX}.top_k", "clip feedback needs top_k, threshold or both")
            if self.top_k is not None:
                _int_at_least("top_k", self.top_k, 1)
            if self.threshold is not None and (
                not isinstance(self.threshold, int | float) or isinstance(self.threshold, bool)
            ):
                raise ConfigError(
                    f"{PREFIX}.threshold", f"must be a number, got {self.threshold!r}"
                )
            if not self.clip_model:
                raise ConfigError(f"{PREFIX}.clip_model", "is required for clip feedback")
        else:
            for name in ("top_k", "threshold"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"{PREFIX}.{name}",
                        "is only used by clip feedback; human feedback keeps what annotators pass",
                    )
        if not isinstance(self.keep_references, bool):
            raise ConfigError(f"{PREFIX}.keep_references", "must be true or false")
        _int_at_least("min_selected", self.min_selected, 1)
        _int_at_least("generation_batch_size", self.generation_batch_size, 1)
        if self.style_descriptor is not None and not isinstance(self.style_descriptor, str):
            raise ConfigError(f"{PREFIX}.style_descriptor", "must be a string")
        self.sampler_settings(config)

    def descriptor(self, config: TrainConfig) -> str:
        from training.engine.style_prompts import run_style_descriptor

        return run_style_descriptor(config)

    def sampler_settings(self, config: TrainConfig) -> SamplerSettings:
        """The generation settings, the style descriptor as the prompt suffix (so generations
        are prompted exactly as the model was trained)."""
        from training.engine.generation import SamplerSettings

        if not isinstance(self.sampler, dict):
            raise ConfigError(f"{PREFIX}.sampler", "must be an object")
        if "style_suffix" in self.sampler:
            raise ConfigError(
                f"{PREFIX}.sampler.style_suffix", "is set from styledrop.style_descriptor"
            )
        values = {"resolution": config.resolution, **self.sampler}
        values["style_suffix"] = self.descriptor(config) or None
        try:
            return SamplerSettings.from_dict(values)
        except (TypeError, ValueError) as error:
            where, _, message = str(error).partition(": ")
            name = where if where.startswith("sampler.") else "sampler"
            raise ConfigError(f"{PREFIX}.{name}", message or str(error)) from error


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{PREFIX}.{name}", f"must be an integer >= {minimum}, got {value!r}")
