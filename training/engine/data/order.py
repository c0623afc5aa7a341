"""Batch order: a pure function of (seed, epoch, cursor, moved), which is what lets a resumed run
see exactly the samples an uninterrupted one would."""

from __future__ import annotations

import torch


class EpochBatchOrder:
    """Endless sample order: a fresh permutation per epoch, fixed by (seed, epoch).

    A take never holds a sample twice. It is at most `size` long, and a take that runs past the
    end of an epoch fills from the next one, whose permutation then puts the samples this take
    already holds last (`moved`), so each sample is still read exactly once per epoch. The state
    is the epoch, the cursor and those moved samples (fewer than one take), so a checkpoint can
    store exactly where a run stopped reading.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size <= 0:
            raise ValueError("EpochBatchOrder needs at least one sample")
        self.size, self.seed = size, seed
        self.cursor = 0
        self._start_epoch(0, [])

    def _start_epoch(self, epoch: int, moved: list[int]) -> None:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        permutation = torch.randperm(self.size, generator=generator).tolist()
        last = set(moved)
        self.epoch, self.moved = epoch, list(moved)
        self._order = [i for i in permutation if i not in last] + [
            i for i in permutation if i in last
        ]

    def take(self, count: int) -> list[int]:
        """The next min(count, size) samples, all different."""
        taken: list[int] = []
        while len(taken) < min(count, self.size):
            if self.cursor == self.size:
                self._start_epoch(self.epoch + 1, taken)
                self.cursor = 0
            taken.append(self._order[self.cursor])
            self.cursor += 1
        return taken

    def state_dict(self) -> dict[str, object]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "moved": list(self.moved),
            "size": self.size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state["size"] != self.size or state["seed"] != self.seed:
            raise ValueError(
                f"data position is for {state['size']} samples / seed {state['seed']}, "
                f"this dataset has {self.size} samples / seed {self.seed}"
            )
        epoch, cursor, moved = state["epoch"], state["cursor"], state.get("moved", [])
        assert isinstance(epoch, int) and isinstance(cursor, int) and isinstance(moved, list)
        self._start_epoch(epoch, moved)
        self.cursor = cursor
