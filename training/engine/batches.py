"""The loop's data side: which rows a step reads, their latents (cached or encoded), captions,
timesteps and conditioning, drawn from the run's saved generator so a resumed run draws exactly
what an uninterrupted one would.

`BatchSource.draw(step, micro_step)` returns one `TrainingBatch` per micro-step; the recipe
plans its parts (role, count, timestep window, weight) from step counters alone. With
`image_fit: "bucket"` each part reads one aspect-ratio bucket (`data/buckets.py`); a batch whose
parts fell in different buckets holds one `BucketGroup` per bucket. A part never holds one image
twice, so a bucket (or dataset) smaller than the part makes the micro-batch smaller: timesteps,
weights and the loss's mean follow the samples actually read (`Plan.counts`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from training.engine.config import DATASET_ROLES, TrainConfig
from training.engine.data import (
    BucketBatchOrder,
    EpochBatchOrder,
    ImageCaptionDataset,
    LatentCache,
    encode_latent_parameters,
    sample_latents,
)
from training.engine.data.alpha import latent_mask
from training.engine.data.prefetch import (
    Loaded,
    Plan,
    Prefetcher,
    Read,
    read_sample,
    without_repeats,
)
from training.engine.families import Geometry, ModelFamily, select_conditioning
from training.engine.recipes import BatchPart, Recipe
from training.engine.run_types import DataError
from training.engine.style_prompts import run_style_descriptor, with_style_descriptor
from training.engine.timesteps import sample_timesteps

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One read sample: pixels to encode, or the latent cache's posterior parameters."""

    sha256: str
    weight: float
    caption: str
    pixels: torch.Tensor | None  # None when the latent cache had it
    parameters: torch.Tensor | None
    geometry: Geometry
    flip: bool = False
    # alpha_mode "loss_mask": [1, H, W] pixel alpha until encoded, then [1, h, w] latent-sized
    mask: torch.Tensor | None = None

    @property
    def bucket(self) -> tuple[int, int]:
        """Samples of one bucket (training size, height x width) stack into one tensor."""
        return self.geometry.target_size


@dataclass
class BucketGroup:
    """Samples `start:stop` of a micro-batch, all in one bucket: their latents stack."""

    start: int
    stop: int
    latents: torch.Tensor
    conditioning: dict[str, Any]
    masks: torch.Tensor | None = None  # [b, 1, h, w] loss weights (alpha_mode "loss_mask")


@dataclass
class TrainingBatch:
    """One micro-batch; `roles`/`timesteps` are what tests assert on. Each group holds the
    family's forward arguments for its samples (text embeddings, pooled embeddings, SDXL's
    added_cond_kwargs). Without buckets, or when every part of the batch fell in one bucket,
    there is one group and `latents`/`conditioning` are its."""

    groups: list[BucketGroup]
    timesteps: torch.Tensor
    weights: torch.Tensor
    roles: list[str]
    image_sha256: list[str] = field(default_factory=list)
    geometry: list[Geometry] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    flipped: list[bool] = field(default_factory=list)

    def _only_group(self) -> BucketGroup:
        if len(self.groups) != 1:
            raise ValueError(f"this batch spans {len(self.groups)} buckets; read .groups")
        return self.groups[0]

    @property
    def latents(self) -> torch.Tensor:
        return self._only_group().latents

    @property
    def conditioning(self) -> dict[str, Any]:
        return self._only_group().conditioning


def group_runs(samples: list[Sample]) -> list[tuple[int, int]]:
    """(start, stop) of each run of consecutive samples in one bucket. Recipe parts are
    contiguous and each part reads one bucket, so a batch has at most one run per part."""
    runs: list[tuple[int, int]] = []
    for index, sample in enumerate(samples):
        if runs and samples[runs[-1][0]].bucket == sample.bucket:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def split_conditioning(conditioning: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    if start == 0 and stop == _batch_size(conditioning):
        return conditioning
    return select_conditioning(conditioning, torch.arange(start, stop))


def _batch_size(conditioning: dict[str, Any]) -> int:
    for value in conditioning.values():
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
        if isinstance(value, dict):
            return _batch_size(value)
    return 0


def rank_share(taken: list[int], rank: int, processes: int) -> list[int]:
    """Rank `rank`'s rows of one part's take for all `processes` ranks: a slice, as even as the
    take allows (a small bucket gives fewer rows than the part asked for). A take with fewer
    rows than there are ranks gives each rank one, so some ranks share a row: a rank with
    nothing to train would stall the others at the gradient all-reduce."""
    if not taken:
        raise ValueError("a part's take is empty")
    if len(taken) < processes:
        return [taken[rank % len(taken)]]
    return taken[rank * len(taken) // processes : (rank + 1) * len(taken) // processes]


def batch_orders(
    config: TrainConfig, datasets: dict[str, ImageCaptionDataset]
) -> tuple[dict[str, EpochBatchOrder | BucketBatchOrder], list[str]]:
    """The read order of each role (by bucket with image_fit "bucket") and the images the
    bucketing scan could not read (skipped from the start, as a failed load would be)."""
    orders: dict[str, EpochBatchOrder | BucketBatchOrder] = {}
    unreadable: list[str] = []
    for role, dataset in datasets.items():
        seed = config.seed * 1009 + DATASET_ROLES.index(role)
        if config.image_fit != "bucket":
            orders[role] = EpochBatchOrder(len(dataset), seed)
            continue
        buckets, failed = dataset.buckets()
        for index, why in failed.items():
            logger.warning("datasets.%s: skipping unreadable sample: %s", role, why)
            unreadable.append(dataset.rows[index].image_sha256)
        if not buckets:
            raise DataError(f"datasets.{role}: not one image of {len(dataset)} could be read")
        orders[role] = BucketBatchOrder(buckets, seed)
    return orders, unreadable


@dataclass
class BatchSource:
    """Everything a micro-batch is drawn from. `orders` (read position per role), `generator`
    and `skipped` are saved with every checkpoint."""

    config: TrainConfig
    recipe: Recipe
    datasets: dict[str, ImageCaptionDataset]
    orders: dict[str, EpochBatchOrder | BucketBatchOrder]
    family: ModelFamily
    pipeline: Any
    vae: Any
    generator: torch.Generator
    device: torch.device
    weight_dtype: torch.dtype
    process_index: int = 0
    num_processes: int = 1
    latent_cache: LatentCache | None = None
    skipped: list[str] = field(default_factory=list)
    _bad: set[str] = field(default_factory=set)
    prefetcher: Prefetcher | None = None

    def __post_init__(self) -> None:
        self.scaling_factor, self.shift_factor = self.family.latent_scale(self.vae)
        # StyleDrop's descriptor names the style in every training caption (and, through the
        # checkpoint's config, in every sampling prompt), whichever recipe trains it.
        self.style_descriptor = run_style_descriptor(self.config)

    def set_skipped(self, skipped: list[str]) -> None:
        self.skipped[:] = skipped
        self._bad = set(skipped)
        self.close_prefetch()  # a restored run reads on from its restored position

    def _sample(self, role: str, loaded: Loaded) -> Sample:
        """A worker's (or the inline reader's) result as a Sample; rows it found unreadable are
        reported once as skipped."""
        self._report_skipped(role, loaded.skipped)
        return Sample(
            loaded.sha256,
            loaded.weight,
            loaded.caption,
            loaded.pixels,
            loaded.parameters,
            loaded.geometry,
            loaded.flip,
            loaded.mask,
        )

    def _report_skipped(self, role: str, skipped: list[tuple[str, str]]) -> None:
        for sha, why in skipped:
            if sha not in self._bad:
                logger.warning("datasets.%s: skipping unreadable sample: %s", role, why)
                self._bad.add(sha)
                self.skipped.append(sha)

    def plan(self, step: int, micro_step: int, orders: dict[str, Any]) -> Plan:
        """The reads of one micro-batch (advances `orders`): rows from the batch orders, flips
        from a generator keyed by (seed, micro step, rank), so planning ahead in another
        process draws nothing from the run's own generator."""
        parts = self.recipe.plan(step, micro_step)
        count = sum(part.count for part in parts)
        flips = self._keyed_flips(micro_step, count)
        reads: list[Read] = []
        counts: list[int] = []
        for part in parts:
            indices = self._part_indices(part, orders)
            counts.append(len(indices))
            for index in indices:
                reads.append(Read(part.role, index, flips[len(reads)]))
        positions = {role: order.state_dict() for role, order in orders.items()}
        return Plan(micro_step, reads, positions, counts)

    def _keyed_flips(self, micro_step: int, count: int) -> list[bool]:
        probability = self.config.random_flip
        if probability <= 0:
            return [False] * count
        key = ((self.config.seed * 1_000_003 + micro_step) * 8191 + self.process_index) % 2**63
        draws = torch.rand(count, generator=torch.Generator().manual_seed(key))
        return (draws < probability).tolist()

    def _read(self, step: int, micro_step: int) -> tuple[Plan, list[Sample]]:
        """Plan and read one micro-batch: from the workers when `num_workers` is set and the
        caller asks in order, else in this process."""
        ordered = step == micro_step // self.config.gradient_accumulation_steps
        if self.config.num_workers and ordered:
            taken = self.prefetcher.take(micro_step) if self.prefetcher else None
            if taken is None:
                self.close_prefetch()
                self.prefetcher = Prefetcher(
                    lambda micro, orders: self.plan(
                        micro // self.config.gradient_accumulation_steps, micro, orders
                    ),
                    self.orders,
                    micro_step,
                    self.datasets,
                    self.latent_cache,
                    self._bad,
                    self.config.num_workers,
                    self.config.prefetch_batches,
                )
                taken = self.prefetcher.take(micro_step)
                assert taken is not None
            planned, loaded = taken
            for role, position in planned.positions.items():
                self.orders[role].load_state_dict(position)
            if self.latent_cache is not None:  # the workers' own counters stay in the workers
                hits = sum(item.parameters is not None for item in loaded)
                self.latent_cache.hits += hits
                self.latent_cache.misses += len(loaded) - hits
        else:
            planned = self.plan(step, micro_step, self.orders)
            loaded = [
                read_sample(self.datasets, self.latent_cache, read, self._bad)
                for read in planned.reads
            ]
        planned, loaded, dropped = without_repeats(
            self.datasets, self.latent_cache, planned, loaded, self._bad
        )
        for role, skipped in dropped:
            self._report_skipped(role, skipped)
        samples = [
            self._sample(read.role, item) for read, item in zip(planned.reads, loaded, strict=True)
        ]
        return planned, samples

    def close_prefetch(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
            self.prefetcher = None

    def _part_indices(self, part: BatchPart, orders: dict[str, Any]) -> list[int]:
        """This rank's rows of `part`: every rank takes the same rows for all ranks (the orders
        are replicated) and keeps its share."""
        taken = orders[part.role].take(part.count * self.num_processes)
        return rank_share(taken, self.process_index, self.num_processes)

    def _encode_pending(self, samples: list[Sample]) -> None:
        pending = [s for s in samples if s.parameters is None]
        for start, stop in group_runs(pending):
            self._encode(pending[start:stop])

    def _encode(self, pending: list[Sample]) -> None:
        pixels = torch.stack([s.pixels for s in pending]).to(self.device, self.weight_dtype)  # type: ignore[misc]
        if self.latent_cache is None:
            encoded = encode_latent_parameters(self.vae, pixels).float()
        else:
            # A cached latent must be a function of its image alone: a VAE's output moves in
            # its last bits with the batch it is encoded in, and which images of a micro-batch
            # are cached depends on history (a run killed while writing a batch's files, a
            # resumed one), so batched encoding made a resumed run differ from an
            # uninterrupted one. Each image is encoded once per cache, so this costs little.
            encoded = torch.cat(
                [encode_latent_parameters(self.vae, one[None]) for one in pixels]
            ).float()
        for sample, tensor in zip(pending, encoded, strict=True):
            sample.parameters = tensor
            if sample.mask is not None:
                sample.mask = latent_mask(sample.mask, (tensor.shape[-2], tensor.shape[-1]))
                if not sample.mask.any():
                    logger.warning(
                        "image %s is fully transparent: with alpha_mode loss_mask it trains "
                        "nothing",
                        sample.sha256,
                    )
            if self.latent_cache is not None:
                self.latent_cache.put(
                    sample.sha256, tensor, sample.geometry, sample.flip, sample.mask
                )

    @torch.no_grad()
    def draw(self, step: int, micro_step: int) -> TrainingBatch:
        """Plan, read and encode one micro-batch (advances the data position and the RNG)."""
        parts = self.recipe.plan(step, micro_step)
        planned, samples = self._read(step, micro_step)
        roles = [read.role for read in planned.reads]
        timesteps, weights = [], []
        self._encode_pending(samples)
        runs = group_runs(samples)
        latents = [
            sample_latents(
                torch.stack([s.parameters.to(self.device) for s in samples[start:stop]]),  # type: ignore[union-attr]
                self.scaling_factor,
                self.generator,
                shift_factor=self.shift_factor,
            )
            for start, stop in runs
        ]
        for part, count in zip(parts, planned.counts, strict=True):
            timesteps.append(
                sample_timesteps(count, part.t_min, part.t_max, self.generator, self.device)
            )
            weights.extend([part.loss_weight] * count)
        sample_weights = torch.tensor(
            [s.weight if self.config.use_sample_weights else 1.0 for s in samples],
            device=self.device,
        )
        geometry = [s.geometry for s in samples]
        dropped = self.coin_flips(len(samples), self.config.caption_dropout)
        captions = [
            "" if drop else with_style_descriptor(s.caption, self.style_descriptor)
            for s, drop in zip(samples, dropped, strict=True)
        ]
        conditioning = self.family.condition(self.pipeline, captions, geometry, self.device)
        groups = [
            BucketGroup(
                start,
                stop,
                group_latents,
                split_conditioning(conditioning, start, stop),
                self._masks(samples[start:stop]),
            )
            for (start, stop), group_latents in zip(runs, latents, strict=True)
        ]
        return TrainingBatch(
            groups=groups,
            timesteps=torch.cat(timesteps),
            weights=torch.tensor(weights, device=self.device) * sample_weights,
            roles=roles,
            image_sha256=[s.sha256 for s in samples],
            geometry=geometry,
            captions=captions,
            flipped=[s.flip for s in samples],
        )

    def _masks(self, samples: list[Sample]) -> torch.Tensor | None:
        if self.config.alpha_mode != "loss_mask":
            return None
        return torch.stack([s.mask for s in samples]).to(self.device)  # type: ignore[misc]

    def coin_flips(self, count: int, probability: float) -> list[bool]:
        """`count` draws that are True with `probability`, from the run's saved generator (so a
        resumed run flips and drops exactly as an uninterrupted one); none drawn when off."""
        if probability <= 0:
            return [False] * count
        draws = torch.rand(count, generator=self.generator, device=self.generator.device)
        return (draws < probability).tolist()
