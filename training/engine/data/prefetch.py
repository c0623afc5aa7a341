"""Reading samples ahead of the step in `DataLoader` workers (`num_workers`, `prefetch_batches`).

What a micro-batch reads is a pure function of the read position and the step counters: the
main process plans each micro-batch (rows from the batch orders, flips from a generator keyed
by seed and micro step), workers only open, decode, fit and look up the latent cache, and the
main process takes the batches back in order, setting its read position to the one saved with
each batch. So a checkpoint stores the position of the last batch *trained*, not the last one
read ahead, and a run reads the same samples with 0 or 8 workers, resumed or not.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from training.engine.data.images import ImageCaptionDataset, ImageLoadError
from training.engine.data.latents import LatentCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Read:
    """One sample to read: row `index` of the `role` dataset, mirrored or not."""

    role: str
    index: int
    flip: bool


@dataclass
class Plan:
    """One micro-batch's reads, the micro step it is for, the read position after it, and how
    many of the reads each recipe part got (fewer than it asked for when its bucket is small)."""

    micro_step: int
    reads: list[Read]
    positions: dict[str, Any]
    counts: list[int]


@dataclass
class Loaded:
    """What a worker hands back for one Read: the sample's fields, and rows it found unreadable
    on the way (so the main process can report them as skipped)."""

    sha256: str
    weight: float
    caption: str
    pixels: torch.Tensor | None
    parameters: torch.Tensor | None
    geometry: Any
    flip: bool
    mask: torch.Tensor | None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_sample(
    datasets: dict[str, ImageCaptionDataset],
    cache: LatentCache | None,
    read: Read,
    known_bad: set[str],
) -> Loaded:
    """The sample `read` asks for (cached latent parameters, or decoded pixels), stepping to
    the next row of its bucket when an image cannot be opened, so one bad file never stops a
    run. Deterministic: the row chosen depends only on which files are unreadable."""
    dataset = datasets[read.role]
    skipped: list[tuple[str, str]] = []
    for candidate in dataset.fallbacks(read.index):
        row = dataset.rows[candidate]
        if row.image_sha256 in known_bad:
            continue
        if cache is not None:
            cached = cache.get(row.image_sha256, read.flip)
            if cached is not None:
                parameters, geometry, mask = cached
                return Loaded(
                    row.image_sha256,
                    row.weight,
                    row.caption,
                    None,
                    parameters,
                    geometry,
                    read.flip,
                    mask,
                    skipped,
                )
        try:
            loaded = dataset.load(candidate, flip=read.flip)
        except ImageLoadError as error:
            skipped.append((row.image_sha256, str(error)))
            known_bad = known_bad | {row.image_sha256}
            continue
        return Loaded(
            row.image_sha256,
            row.weight,
            row.caption,
            loaded.pixels,
            None,
            loaded.geometry,
            read.flip,
            loaded.mask,
            skipped,
        )
    raise ImageLoadError(f"datasets.{read.role}: not one image of {len(dataset)} could be loaded")


def without_repeats(
    datasets: dict[str, ImageCaptionDataset],
    cache: LatentCache | None,
    planned: Plan,
    loaded: list[Loaded],
    known_bad: set[str],
) -> tuple[Plan, list[Loaded], list[tuple[str, list[tuple[str, str]]]]]:
    """`planned` and `loaded` with no image twice in one part. A read whose image could not be
    opened took the next row of its bucket, which the part may hold already: it takes the next
    row the part does not hold, or is dropped (a smaller part, as for a small bucket). Runs in
    the main process on what was read, so it is the same with or without workers. Also returns
    the unreadable rows dropped reads found, by role, for the caller to report."""
    reads: list[Read] = []
    items: list[Loaded] = []
    counts: list[int] = []
    unreported: list[tuple[str, list[tuple[str, str]]]] = []
    start = 0
    for count in planned.counts:
        part = list(
            zip(planned.reads[start : start + count], loaded[start : start + count], strict=True)
        )
        start += count
        moved = [item.sha256 != datasets[r.role].rows[r.index].image_sha256 for r, item in part]
        held = {item.sha256 for (_, item), was in zip(part, moved, strict=True) if not was}
        kept = 0
        for (read, item), was in zip(part, moved, strict=True):
            if was and item.sha256 in held:
                avoid = known_bad | held | {sha for sha, _ in item.skipped}
                try:
                    again = read_sample(datasets, cache, read, avoid)
                except ImageLoadError:
                    unreported.append((read.role, item.skipped))
                    continue
                again.skipped[:0] = item.skipped
                item = again
            held.add(item.sha256)
            reads.append(read)
            items.append(item)
            kept += 1
        counts.append(kept)
    return Plan(planned.micro_step, reads, planned.positions, counts), items, unreported


class _Reads(torch.utils.data.Dataset):
    """Worker side: an item is a Plan (passed through) or a Read (loaded)."""

    def __init__(
        self,
        datasets: dict[str, ImageCaptionDataset],
        cache: LatentCache | None,
        known_bad: set[str],
    ) -> None:
        self.datasets, self.cache, self.known_bad = datasets, cache, set(known_bad)

    def __len__(self) -> int:  # the sampler decides; DataLoader only needs it to exist
        return 0

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, Plan):
            return item
        return read_sample(self.datasets, self.cache, item, self.known_bad)


class _Plans(torch.utils.data.Sampler):
    """Main-process side: plans micro-batches from `start` on, on its own copy of the orders."""

    def __init__(self, plan: Callable[[int, dict[str, Any]], Plan], orders: dict, start: int):
        self.plan, self.orders, self.start = plan, copy.deepcopy(orders), start

    def __iter__(self) -> Iterator[list[Any]]:
        micro = self.start
        while True:
            planned = self.plan(micro, self.orders)
            yield [planned, *planned.reads]
            micro += 1


def _as_list(items: list[Any]) -> list[Any]:
    return items


class Prefetcher:
    """Micro-batches read ahead by `workers` processes, `ahead` batches each."""

    def __init__(
        self,
        plan: Callable[[int, dict[str, Any]], Plan],
        orders: dict[str, Any],
        start: int,
        datasets: dict[str, ImageCaptionDataset],
        cache: LatentCache | None,
        known_bad: set[str],
        workers: int,
        ahead: int,
    ) -> None:
        self.next_micro = start
        loader = torch.utils.data.DataLoader(
            _Reads(datasets, cache, known_bad),
            batch_sampler=_Plans(plan, orders, start),
            num_workers=workers,
            prefetch_factor=ahead,
            collate_fn=_as_list,
            persistent_workers=False,
        )
        self._iterator: Any = iter(loader)

    def take(self, micro_step: int) -> tuple[Plan, list[Loaded]] | None:
        """The batch for `micro_step`, or None when this prefetcher is not at it (the caller
        asked out of order: it reads synchronously and starts a new prefetcher)."""
        if micro_step != self.next_micro:
            return None
        planned, *loaded = next(self._iterator)
        assert planned.micro_step == micro_step
        self.next_micro += 1
        return planned, loaded

    def close(self) -> None:
        # Dropping the iterator stops its workers.
        self._iterator = None
