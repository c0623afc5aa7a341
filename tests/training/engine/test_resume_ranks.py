"""Multi-GPU checkpoints keep every rank's random streams, so each rank resumes exactly.

A real multi-process run is too costly here; two Trainers stand for ranks 0 and 1 of a world of
two, saving concurrently through the real `save_training_checkpoint` with a barrier as
accelerate's `wait_for_everyone`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch

from training.engine.checkpoint import restore_rank_rng, save_training_checkpoint
from training.engine.config import TrainConfig
from training.engine.loop import Trainer


class _Rank:
    """The trainer's accelerator as rank `index` of `world` processes sees it."""

    def __init__(self, real: Any, index: int, world: int, barrier: threading.Barrier) -> None:
        self._real, self._barrier = real, barrier
        self.process_index, self.num_processes = index, world
        self.is_main_process = index == 0

    def wait_for_everyone(self) -> None:
        self._barrier.wait(timeout=120)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _trainers(make_config, count: int) -> list[Trainer]:
    config = make_config(adapter="lora", steps=2, batch_size=2)
    return [Trainer(TrainConfig.from_dict(config), device="cpu") for _ in range(count)]


def test_every_rank_saves_and_restores_its_own_rng(make_config) -> None:
    rank0, rank1, resumed1 = _trainers(make_config, 3)
    barrier = threading.Barrier(2)
    for index, trainer in enumerate((rank0, rank1)):
        trainer.accelerator = _Rank(trainer.accelerator, index, 2, barrier)
        trainer.generator.manual_seed(1000 + index)  # each rank has its own noise stream
        trainer.train_step()
    states = [t.generator.get_state().clone() for t in (rank0, rank1)]
    assert not torch.equal(states[0], states[1])

    saved: dict[int, Path | None] = {}

    def save(index: int, trainer: Trainer) -> None:
        saved[index] = save_training_checkpoint(trainer)

    threads = [threading.Thread(target=save, args=(i, t)) for i, t in enumerate((rank0, rank1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert saved[1] is None and saved[0] is not None  # the main process completes the folder
    folder = saved[0]
    state = folder / "training_state"
    assert sorted(p.name for p in state.glob("rng_*")) == [
        "rng_0.json",
        "rng_0.safetensors",
        "rng_1.json",
        "rng_1.safetensors",
    ]
    trainer_state = json.loads((state / "trainer.json").read_text())
    assert trainer_state["world_size"] == 2

    # Rank 1 of the resumed run gets rank 1's stream back, not a reseeded one.
    resumed1.accelerator = _Rank(resumed1.accelerator, 1, 2, threading.Barrier(1))
    resumed1.step = trainer_state["step"]
    restore_rank_rng(resumed1, folder, trainer_state)
    assert torch.equal(resumed1.generator.get_state(), states[1])
    draws = torch.rand(4, generator=resumed1.generator)
    rank1.generator.set_state(states[1])
    assert torch.equal(draws, torch.rand(4, generator=rank1.generator))
