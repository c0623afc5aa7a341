"""Recipes: which dataset each sample of a batch comes from, its timestep window and loss weight.

- `domain`: the whole batch from the domain set, t in [0, T).
- `sequential`: phases in `sequential_order` (alignment then style by default), one run, each
  phase a block of optimizer steps on one set with t in [0, T).
- `style_tailoring`: every batch mixes alignment samples (t in [t_s, T)) with style samples
  (t in [0, t_s)), `mix_ratio` of it alignment, each part's loss scaled by `loss_weights`.

A recipe is a pure function of the step counters, so a resumed run plans the same batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from training.engine.config import ConfigError, TrainConfig
from training.engine.timesteps import alignment_count


@dataclass(frozen=True)
class BatchPart:
    role: str
    count: int
    t_min: int
    t_max: int  # exclusive
    loss_weight: float


class Recipe:
    name = ""

    def __init__(self, config: TrainConfig, num_train_timesteps: int) -> None:
        self.config = config
        self.num_train_timesteps = num_train_timesteps

    @property
    def roles(self) -> list[str]:
        return self.config.required_roles()

    def weight(self, role: str) -> float:
        return float(self.config.loss_weights.get(role, 1.0))

    def plan(self, step: int, micro_step: int) -> list[BatchPart]:
        """Parts of the micro-batch at optimizer step `step` (0-based), `micro_step` counting
        every micro-batch of the run (step * gradient_accumulation_steps + i)."""
        raise NotImplementedError


class DomainRecipe(Recipe):
    name = "domain"

    def plan(self, step: int, micro_step: int) -> list[BatchPart]:
        size = self.config.batch_size
        return [BatchPart("domain", size, 0, self.num_train_timesteps, self.weight("domain"))]


class SequentialRecipe(Recipe):
    name = "sequential"

    def phase_ends(self) -> list[int]:
        """Exclusive last optimizer step of each phase."""
        order, steps = self.config.sequential_order, self.config.steps
        lengths = self.config.phase_steps
        if lengths is None:
            base, extra = divmod(steps, len(order))
            lengths = [base + (1 if i < extra else 0) for i in range(len(order))]
        ends, total = [], 0
        for length in lengths:
            total += length
            ends.append(total)
        return ends

    def phase(self, step: int) -> str:
        for role, end in zip(self.config.sequential_order, self.phase_ends(), strict=True):
            if step < end:
                return role
        return self.config.sequential_order[-1]

    def plan(self, step: int, micro_step: int) -> list[BatchPart]:
        role = self.phase(step)
        size = self.config.batch_size
        return [BatchPart(role, size, 0, self.num_train_timesteps, self.weight(role))]


class StyleTailoringRecipe(Recipe):
    name = "style_tailoring"

    def plan(self, step: int, micro_step: int) -> list[BatchPart]:
        size, t_s = self.config.batch_size, self.config.t_s
        aligned = alignment_count(micro_step, size, self.config.mix_ratio)
        parts = [
            BatchPart(
                "alignment", aligned, t_s, self.num_train_timesteps, self.weight("alignment")
            ),
            BatchPart("style", size - aligned, 0, t_s, self.weight("style")),
        ]
        return [part for part in parts if part.count > 0]


RECIPES: dict[str, Callable[[TrainConfig, int], Recipe]] = {
    "domain": DomainRecipe,
    "sequential": SequentialRecipe,
    "style_tailoring": StyleTailoringRecipe,
}


def build_recipe(config: TrainConfig, num_train_timesteps: int) -> Recipe:
    config.validate(num_train_timesteps)
    if config.recipe not in RECIPES:  # styledrop_iterative drives several runs, see run_training
        raise ConfigError(
            "recipe",
            f"{config.recipe!r} is not a batch plan of one run; start it with run_training",
        )
    return RECIPES[config.recipe](config, num_train_timesteps)
