"""Data loading that keeps up: workers read ahead without changing what a run reads, and the
latent cache never serves a latent made under other options."""

from __future__ import annotations

import pytest
import torch

from training.engine.config import ConfigError, TrainConfig
from training.engine.loop import Trainer
from training.engine.run import run_training

from .test_buckets import write_sticker_set


@pytest.fixture(scope="module")
def sticker_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stickers")
    return {role: write_sticker_set(root, role) for role in ("domain", "alignment", "style")}


def _options(sticker_sets, **overrides):
    return {
        "datasets": sticker_sets,
        "image_fit": "bucket",
        "bucket_step": 8,
        "random_flip": 0.5,
        "recipe": "style_tailoring",
        "adapter": "lora",
        "adapter_params": {"rank": 2},
        "batch_size": 2,
        **overrides,
    }


def test_workers_read_exactly_what_the_main_process_reads(make_config, sticker_sets):
    inline = Trainer(TrainConfig.from_dict(make_config(**_options(sticker_sets))), device="cpu")
    ahead = Trainer(
        TrainConfig.from_dict(
            make_config(**_options(sticker_sets, num_workers=2, prefetch_batches=2))
        ),
        device="cpu",
    )
    assert ahead.batches.prefetcher is None
    flips = []
    for micro in range(6):
        a = inline.draw_batch(step=micro, micro_step=micro)
        b = ahead.draw_batch(step=micro, micro_step=micro)
        assert a.image_sha256 == b.image_sha256 and a.flipped == b.flipped
        flips += a.flipped
        assert len(a.groups) == len(b.groups)
        for x, y in zip(a.groups, b.groups, strict=True):
            assert torch.equal(x.latents, y.latents)
        assert inline.orders["style"].state_dict() == ahead.orders["style"].state_dict()
    assert ahead.batches.prefetcher is not None  # the batches did come from the workers
    assert any(flips) and not all(flips)


def test_a_run_with_workers_resumes_exactly_and_equals_one_without(
    make_config, sticker_sets, tmp_path
):
    class Killed(Exception):
        pass

    def kill_at_3(step, total, loss):
        if step == 3:
            raise Killed

    common = {"steps": 4, "checkpoint_every": 2}
    inline = run_training(
        make_config(output_dir=str(tmp_path / "a"), **_options(sticker_sets, **common))
    )
    broken = make_config(
        output_dir=str(tmp_path / "b"), **_options(sticker_sets, num_workers=2, **common)
    )
    with pytest.raises(Killed):
        run_training(broken, progress=kill_at_3)
    resumed = run_training(broken, resume_from="latest")
    assert resumed.losses == inline.losses


@pytest.mark.parametrize(
    ("field", "value"), [("num_workers", -1), ("num_workers", 1.5), ("prefetch_batches", 0)]
)
def test_bad_loading_options_name_their_field(make_config, field, value):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict(make_config(**{field: value}))
    assert caught.value.field == field


def _cached_draw(make_config, cache, **overrides) -> Trainer:
    trainer = Trainer(
        TrainConfig.from_dict(make_config(latent_cache_dir=str(cache), **overrides)),
        device="cpu",
    )
    trainer.draw_batch()
    return trainer


@pytest.mark.parametrize(
    "change",
    [
        {"resolution": 40},  # resolution
        {"image_fit": "pad"},  # crop -> padding
        {"image_fit": "bucket", "bucket_step": 8},  # bucket
        {"random_flip": 1.0},  # flip
        {"alpha_mode": "loss_mask"},  # alpha mode
        {"background_color": [0, 0, 0]},  # what alpha is composited on
        {"vae": True},  # another VAE
    ],
    ids=["resolution", "crop", "bucket", "flip", "alpha_mode", "background", "vae"],
)
def test_changing_anything_that_changes_a_latent_misses_the_cache(
    make_config, tmp_path, family_bases, change
):
    cache = tmp_path / "latents"
    base = {}
    if change.pop("vae", False):
        # the same architecture with other weights: only the VAE checksum tells them apart
        from training.engine.tiny import save_tiny_base_model

        base = {"base_model": str(save_tiny_base_model(tmp_path / "other", seed=1))}
    first = _cached_draw(make_config, cache)
    assert (first.latent_cache.hits, first.latent_cache.misses) == (0, 4)
    same = _cached_draw(make_config, cache)
    assert (same.latent_cache.hits, same.latent_cache.misses) == (4, 0)  # the cache works
    changed = _cached_draw(make_config, cache, **change, **base)
    assert changed.latent_cache.hits == 0 and changed.latent_cache.misses == 4
