"""Batch order: a pure function of (seed, epoch, cursor), which is what lets a resumed run see
exactly the samples an uninterrupted one would."""

from __future__ import annotations

import torch


class EpochBatchOrder:
    """Endless sample order: a fresh permutation per epoch, fixed by (seed, epoch).

    The state is two integers, so a checkpoint can store exactly where a run stopped reading.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size <= 0:
            raise ValueError("EpochBatchOrder needs at least one sample")
        self.size, self.seed = size, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(self.size, generator=generator).tolist()

    def take(self, count: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            taken.append(self._order[self.cursor])
            self.cursor += 1
        return taken

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "size": self.size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != self.size or state["seed"] != self.seed:
            raise ValueError(
                f"data position is for {state['size']} samples / seed {state['seed']}, "
                f"this dataset has {self.size} samples / seed {self.seed}"
            )
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._permutation(self.epoch)
