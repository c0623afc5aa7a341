"""Aspect-ratio buckets: sticker sets are wide, tall and square, and a square crop cuts the edges
off the first two.

As in kohya's sd-scripts (`library/model_util.py` `make_bucket_resolutions`, `train_util.py`
`BucketManager`), the grid holds sizes (width, height) that are multiples of `step` with about
`resolution`² pixels; each image goes to the bucket whose aspect ratio is nearest its own (in
log space, so 2:1 and 1:2 are equally far from square). Unlike kohya, which scales to cover the
bucket and cuts the overhang, the image is scaled to fit inside it and the sliver left over is
padded with the background colour: nothing of a sticker is ever cut. An image more extreme than
the grid's last bucket is padded more; SDXL's time_ids carry the padding as a negative crop.

A micro-batch takes all of one part's samples from one bucket (`BucketBatchOrder`), so they
stack into one tensor; a Style Tailoring batch whose alignment and style parts fall in different
buckets runs the denoiser once per bucket. A bucket holding fewer images than the part asks for
gives a smaller part, never one image twice (kohya, too, shrinks a bucket's batch rather than
repeat: `train_util.py` slices each bucket's shuffled list in `batch_size` steps).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from training.engine.data.order import EpochBatchOrder

Size = tuple[int, int]  # (width, height), as Pillow gives it


@dataclass(frozen=True)
class FitPlan:
    """How one image reaches its training size: resized to `resized` (width, height), then cut
    at `offset` (top, left) when positive, or pasted at (-top, -left) on the background when
    negative (padding)."""

    resized: Size
    offset: tuple[int, int]
    target: Size


def bucket_sizes(resolution: int, step: int, max_aspect: float) -> list[Size]:
    """Every (width, height), multiples of `step`, area at most resolution², aspect within
    `max_aspect` either way; always holds the square (resolution, resolution)."""
    area = resolution * resolution
    sizes = {(resolution, resolution)}
    width = step
    while width <= area // step:
        height = (area // width) // step * step
        if height >= step and max(width / height, height / width) <= max_aspect + 1e-9:
            sizes.add((width, height))
        width += step
    return sorted(sizes)


def nearest_bucket(width: int, height: int, sizes: list[Size]) -> Size:
    aspect = math.log(width / height)
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - aspect), s))


def plan_fit(width: int, height: int, target: Size, fit: str) -> FitPlan:
    """The resize and cut (center_crop) or padding (pad, bucket) that brings a `width` x
    `height` image to `target`."""
    target_w, target_h = target
    if fit == "center_crop":
        scale = max(target_w / width, target_h / height)
        resized = (max(target_w, round(width * scale)), max(target_h, round(height * scale)))
        return FitPlan(
            resized, ((resized[1] - target_h) // 2, (resized[0] - target_w) // 2), target
        )
    scale = min(target_w / width, target_h / height)
    resized = (
        min(target_w, max(1, round(width * scale))),
        min(target_h, max(1, round(height * scale))),
    )
    top, left = (target_h - resized[1]) // 2, (target_w - resized[0]) // 2
    return FitPlan(resized, (-top, -left), target)


class BucketBatchOrder:
    """Endless sample order over buckets: each take picks one bucket (from a generator keyed by
    (seed, take number)) and reads the next samples of that bucket's own `EpochBatchOrder` (a
    fresh permutation per pass over it).

    A take of `count` gives min(count, bucket size) different samples: a bucket smaller than the
    take gives fewer, never a repeat. So that an image in a small bucket is still read as often
    as any other, a bucket is picked with probability proportional to its size divided by what
    one take reads from it (for buckets at least `count` large: proportional to their size).

    The state is the take counter and each bucket's read position, so a checkpoint stores
    exactly where a run stopped reading."""

    def __init__(self, buckets: dict[Size, list[int]], seed: int) -> None:
        if not buckets or not any(buckets.values()):
            raise ValueError("BucketBatchOrder needs at least one sample")
        self.sizes = sorted(size for size, members in buckets.items() if members)
        self.members = [sorted(buckets[size]) for size in self.sizes]
        self.seed = seed
        self.orders = [
            EpochBatchOrder(len(members), seed * 1_000_033 + i)
            for i, members in enumerate(self.members)
        ]
        self.takes = 0
        self._cumulative: dict[int, list[float]] = {}

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.members)

    def signature(self) -> str:
        """Identifies the bucket assignment: a resume refuses a dataset bucketed differently."""
        text = repr([(s, m) for s, m in zip(self.sizes, self.members, strict=True)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _edges(self, count: int) -> list[float]:
        """Cumulative pick probabilities for a take of `count`: a bucket's size over what one
        take reads from it, so every image is read at the same expected rate."""
        if count not in self._cumulative:
            weights = torch.tensor(
                [len(m) / min(count, len(m)) for m in self.members], dtype=torch.float64
            )
            self._cumulative[count] = (weights.cumsum(0) / weights.sum()).tolist()
        return self._cumulative[count]

    def _pick(self, take: int, count: int) -> int:
        generator = torch.Generator().manual_seed((self.seed * 998_244_353 + take) % (2**63))
        draw = torch.rand(1, generator=generator, dtype=torch.float64).item()
        edges = self._edges(count)
        return next(i for i, edge in enumerate(edges) if draw < edge or i == len(edges) - 1)

    def take(self, count: int) -> list[int]:
        """The next min(count, picked bucket's size) samples of one bucket, all different."""
        if count <= 0:
            raise ValueError(f"a take reads at least one sample, asked for {count}")
        bucket = self._pick(self.takes, count)
        self.takes += 1
        members = self.members[bucket]
        return [members[i] for i in self.orders[bucket].take(count)]

    def state_dict(self) -> dict[str, object]:
        return {
            "takes": self.takes,
            "seed": self.seed,
            "size": self.size,
            "buckets": self.signature(),
            "orders": [order.state_dict() for order in self.orders],
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("buckets") != self.signature() or state.get("seed") != self.seed:
            raise ValueError(
                f"data position is for another bucketing (buckets {state.get('buckets')}, seed "
                f"{state.get('seed')}); this dataset has buckets {self.signature()}, seed "
                f"{self.seed}"
            )
        orders = state["orders"]
        assert isinstance(orders, list)
        for order, saved in zip(self.orders, orders, strict=True):
            order.load_state_dict(saved)
        takes = state["takes"]
        assert isinstance(takes, int)
        self.takes = takes
