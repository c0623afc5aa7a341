"""A bucket (or dataset) smaller than a batch part gives a smaller part, never one image twice,
on every rank, and a run over it resumes exactly."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import torch

from training.engine.batches import rank_share
from training.engine.config import TrainConfig
from training.engine.data import BucketBatchOrder, EpochBatchOrder, read_manifest
from training.engine.loop import Trainer
from training.engine.run import run_training

from .test_buckets import bucketed, write_sticker_set

# At resolution 32, bucket_step 8: five square stickers, two tall (24x40) and one wide (40x24).
SMALL_BUCKET_SIZES = [(40, 40), (48, 48), (36, 36), (44, 44), (32, 32), (30, 50), (32, 56)]
SMALL_BUCKET_SIZES += [(64, 32)]


@pytest.fixture(scope="module")
def small_bucket_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("small-buckets")
    return {
        role: write_sticker_set(root, role, sizes=SMALL_BUCKET_SIZES)
        for role in ("domain", "alignment", "style")
    }


def test_an_epoch_order_never_repeats_within_a_take_and_reads_each_sample_once_per_epoch():
    order = EpochBatchOrder(5, seed=3)
    stream: list[int] = []
    for count in [3, 4, 2, 7, 5, 1, 4, 3, 6, 4] * 3:
        taken = order.take(count)
        assert len(taken) == min(count, 5) and len(set(taken)) == len(taken)
        stream += taken
    for start in range(0, len(stream) - 4, 5):
        assert sorted(stream[start : start + 5]) == list(range(5))


def test_an_epoch_order_resumes_exactly_after_a_take_across_epochs():
    order = EpochBatchOrder(5, seed=3)
    order.take(3)
    order.take(4)  # two from epoch 0, then two from epoch 1, which reads those two last
    state = json.loads(json.dumps(order.state_dict()))  # as trainer.json stores it
    assert state["epoch"] == 1 and len(state["moved"]) == 2
    resumed = EpochBatchOrder(5, seed=3)
    resumed.load_state_dict(state)
    counts = (4, 3, 5, 2, 4, 4)
    assert [resumed.take(c) for c in counts] == [order.take(c) for c in counts]


BUCKETS = {(32, 32): list(range(8)), (40, 24): [8], (24, 40): [9, 10]}
BUCKET_OF = {row: size for size, rows in BUCKETS.items() for row in rows}


def test_a_bucket_smaller_than_the_take_gives_fewer_images_and_each_image_its_share():
    order = BucketBatchOrder(BUCKETS, seed=5)
    reads: Counter[int] = Counter()
    sizes = Counter()
    for _ in range(3000):
        taken = order.take(4)
        (size,) = {BUCKET_OF[row] for row in taken}
        assert len(taken) == min(4, len(BUCKETS[size])) and len(set(taken)) == len(taken)
        reads.update(taken)
        sizes[len(taken)] += 1
    assert set(sizes) == {1, 2, 4}
    mean = sum(reads.values()) / len(BUCKET_OF)
    # the lone wide image is read as often as a square one, not a quarter as often
    assert all(0.85 * mean < count < 1.15 * mean for count in reads.values()), reads


def test_a_bucket_order_resumes_exactly_from_its_saved_state():
    order = BucketBatchOrder(BUCKETS, seed=5)
    for count in (4, 3, 4, 2, 4, 4, 1):
        order.take(count)
    resumed = BucketBatchOrder(BUCKETS, seed=5)
    resumed.load_state_dict(json.loads(json.dumps(order.state_dict())))
    counts = (4, 2, 3, 4, 4, 1, 4, 3)
    assert [resumed.take(c) for c in counts] == [order.take(c) for c in counts]


@pytest.mark.parametrize("processes", [2, 3])
def test_every_rank_gets_rows_of_a_small_bucket_and_no_rank_a_repeat(processes):
    ranks = [BucketBatchOrder(BUCKETS, seed=9) for _ in range(processes)]
    per_part = 2
    for _ in range(200):
        shares = [
            rank_share(order.take(per_part * processes), rank, processes)
            for rank, order in enumerate(ranks)
        ]
        for share in shares:
            assert 1 <= len(share) <= per_part and len(set(share)) == len(share)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        rows = [row for share in shares for row in share]
        (size,) = {BUCKET_OF[row] for row in rows}
        if len(BUCKETS[size]) >= processes:  # enough images for every rank: no rank shares one
            assert len(set(rows)) == len(rows)
        else:
            assert set(rows) == set(BUCKETS[size])
    assert len({json.dumps(order.state_dict()) for order in ranks}) == 1  # still replicated


def test_a_tiny_bucket_makes_a_smaller_style_tailoring_batch_with_right_windows_and_time_ids(
    make_config, family_bases, small_bucket_sets
):
    config = TrainConfig.from_dict(
        bucketed(
            make_config,
            small_bucket_sets,
            base_model=str(family_bases("sdxl")),
            adapter="lora",
            recipe="style_tailoring",
            mix_ratio=0.5,
            batch_size=6,
            random_flip=0.5,
        )
    )
    trainer = Trainer(config, device="cpu")
    bucket_size = {
        role: Counter(
            trainer.datasets[role].options.target(w, h, 32)[::-1] for w, h in SMALL_BUCKET_SIZES
        )
        for role in ("alignment", "style")
    }
    smaller = 0
    for micro in range(12):
        batch = trainer.draw_batch(step=micro, micro_step=micro)
        parts = trainer.recipe.plan(micro, micro)
        total = 0
        for part in parts:
            rows = [i for i, role in enumerate(batch.roles) if role == part.role]
            shas = [batch.image_sha256[i] for i in rows]
            assert len(set(shas)) == len(shas)  # never one image twice in a micro-batch
            (target,) = {batch.geometry[i].target_size for i in rows}
            assert len(rows) == min(part.count, bucket_size[part.role][target])
            steps = batch.timesteps[rows]
            assert ((steps >= part.t_min) & (steps < part.t_max)).all()
            total += len(rows)
        smaller += total < 6
        assert batch.timesteps.shape == batch.weights.shape == (total,)
        for group in batch.groups:
            time_ids = group.conditioning["added_cond_kwargs"]["time_ids"]
            assert time_ids.shape[0] == group.stop - group.start == group.latents.shape[0]
            height, width = batch.geometry[group.start].target_size
            assert (time_ids[:, 4:] == torch.tensor([height, width])).all()
        per_sample, objective = trainer._micro_step(batch)
        assert per_sample.shape == objective.shape == (total,)
        assert torch.isfinite(per_sample).all()
    assert smaller  # the small buckets were drawn, and shrank their parts
    loss, _ = trainer.train_step()
    assert loss == loss and loss > 0


def test_a_run_over_a_tiny_bucket_resumes_exactly_with_or_without_workers(
    make_config, small_bucket_sets, tmp_path
):
    class Killed(Exception):
        pass

    def kill_at_3(step, total, loss):
        if step == 3:
            raise Killed

    options = {
        "recipe": "style_tailoring",
        "adapter": "lora",
        "adapter_params": {"rank": 2},
        "steps": 5,
        "checkpoint_every": 2,
        "batch_size": 3,
        "gradient_accumulation_steps": 2,
        "random_flip": 0.5,
    }
    straight = run_training(
        bucketed(make_config, small_bucket_sets, output_dir=str(tmp_path / "a"), **options)
    )
    broken = bucketed(make_config, small_bucket_sets, output_dir=str(tmp_path / "b"), **options)
    with pytest.raises(Killed):
        run_training(broken, progress=kill_at_3)
    resumed = run_training(broken, resume_from="latest")
    assert resumed.losses == straight.losses
    ahead = copy.deepcopy(broken)
    ahead.update(num_workers=1, prefetch_batches=2, output_dir=str(tmp_path / "c"))
    with pytest.raises(Killed):
        run_training(ahead, progress=kill_at_3)
    assert run_training(ahead, resume_from="latest").losses == straight.losses


@pytest.fixture(scope="module")
def one_tall_image_broken(tmp_path_factory):
    """The small-bucket set with one of the two tall stickers cut short: its header (size, so
    its bucket) reads, its pixels do not."""
    root = tmp_path_factory.mktemp("broken-tall")
    spec = write_sticker_set(root, "domain", sizes=SMALL_BUCKET_SIZES)
    rows = read_manifest(spec["manifest"])
    broken = root / "domain" / rows[SMALL_BUCKET_SIZES.index((30, 50))].image_path
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    return {"domain": spec}, rows[SMALL_BUCKET_SIZES.index((30, 50))].image_sha256


def test_an_unreadable_image_never_brings_a_repeat_into_its_batch(
    make_config, one_tall_image_broken
):
    datasets, broken_sha = one_tall_image_broken
    configs = [
        bucketed(make_config, datasets, batch_size=4, **workers)
        for workers in ({}, {"num_workers": 1, "prefetch_batches": 2})
    ]
    inline, ahead = (Trainer(TrainConfig.from_dict(c), device="cpu") for c in configs)
    tall_parts = []
    for micro in range(24):
        batch = inline.draw_batch(step=micro, micro_step=micro)
        assert batch.image_sha256 == ahead.draw_batch(step=micro, micro_step=micro).image_sha256
        assert len(set(batch.image_sha256)) == len(batch.image_sha256), batch.image_sha256
        assert broken_sha not in batch.image_sha256
        assert batch.timesteps.shape == batch.weights.shape == (len(batch.image_sha256),)
        if batch.geometry[0].target_size == (40, 24):  # (height, width): the tall bucket
            tall_parts.append(len(batch.image_sha256))
    assert tall_parts and set(tall_parts) == {1}  # the readable tall sticker, once
    assert inline.skipped == ahead.skipped == [broken_sha]
