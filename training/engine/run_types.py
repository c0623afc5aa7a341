"""What a training run reports and the callbacks it takes, shared by the loop and the drivers
that run it (styledrop_iterative), so neither imports the other for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

ProgressFn = Callable[[int, int, float], None]
CancelFn = Callable[[], bool]

# Fields a resumed run may change: where it writes and how often, not what it computes.
RESUME_MAY_CHANGE = frozenset(
    {
        "output_dir",
        "checkpoint_every",
        "keep_checkpoints",
        "latent_cache_dir",
        "previews",
        "num_workers",
        "prefetch_batches",
    }
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
