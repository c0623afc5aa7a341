"""The toy world on the platform: its base model as a Checkpoint and its prompts as prompt sets.

The world is built once under TOY_WORLD_DIR (default var/toy-world) by the engine's cache, keyed
by its settings and code version, so a second demo reuses it. Its CLIP is the evaluation CLIP
the demo sets (EVAL_CLIP_WEIGHTS); the report recognises it by the marker beside the weights and
presents its numbers as measurements within the toy world.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from curation.models import Prompt, PromptSet
from training.models import Checkpoint
from training.services.checkpoints import register_base_model

logger = logging.getLogger(__name__)

BASE_NAME = "toy-world-base"
GENERATION_SET = "toy-world-generation"
EVALUATION_SET = "toy-world-evaluation"
# Prompts rated by people each round: few, so a demo round stays short. Captions run count-major,
# then colour, then shape (36 = 3 x 4 x 3), so every seventh covers each count, colour and shape
# (every sixth would be circles only). The evaluation set is the twelve contents whose count,
# colour and shape indices sum to a multiple of three: each shape and count four times, each
# colour three, one held-out caption, none of the generation prompts.
GENERATION_EVERY = 7


def _evaluation_prompts(prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from training.engine.toy_world import scenes

    chosen = {
        c.caption
        for c in scenes.all_contents()
        if (c.count + list(scenes.COLOURS).index(c.colour) + scenes.SHAPES.index(c.shape)) % 3 == 0
    }
    return [p for p in prompts if p["text"] in chosen]


@dataclass
class ToyWorld:
    info: dict[str, Any]
    base: Checkpoint
    generation_prompts: PromptSet
    evaluation_prompts: PromptSet

    @property
    def clip_weights(self) -> str:
        return str(self.info["clip_weights"])

    @property
    def pool(self) -> Path:
        return Path(self.info["pool"])

    @property
    def resolution(self) -> int:
        return int(self.info["settings"]["resolution"])


def toy_world_root() -> Path:
    return Path(getattr(settings, "TOY_WORLD_DIR", "") or settings.VAR_DIR / "toy-world")


def _prompt_set(name: str, purpose: str, prompts: list[dict[str, Any]]) -> PromptSet:
    prompt_set, created = PromptSet.objects.get_or_create(
        name=name, version=1, defaults={"purpose": purpose}
    )
    if created:
        Prompt.objects.bulk_create(
            Prompt(
                prompt_set=prompt_set,
                text=p["text"],
                category=p["category"],
                subject=p["text"].split()[-1],
            )
            for p in prompts
        )
    return prompt_set


def ensure_toy_world(
    *, small: bool = True, root: str | Path | None = None, log: Callable[[str], None] | None = None
) -> ToyWorld:
    """Build (or reuse) the toy world and register its base model and prompt sets."""
    from training.engine.toy_world.build import ToyWorldSettings
    from training.engine.toy_world.cache import cached_toy_world
    from training.engine.toy_world.evaluate import load_prompts

    world_settings = ToyWorldSettings.small() if small else ToyWorldSettings()
    info = cached_toy_world(root or toy_world_root(), world_settings, log=log or logger.info)
    prompts = load_prompts(info)
    with transaction.atomic():
        base = register_base_model(info["base_model"], BASE_NAME, tiny=True)
        base.config = {
            **base.config,
            "resolution": info["settings"]["resolution"],
            "toy_world": info["key"],
        }
        base.save(update_fields=["config", "updated_at"])
        generation = _prompt_set(GENERATION_SET, "generation", prompts[::GENERATION_EVERY])
        evaluation = _prompt_set(EVALUATION_SET, "evaluation", _evaluation_prompts(prompts))
    return ToyWorld(info, base, generation, evaluation)
