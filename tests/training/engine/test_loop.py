import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.engine.checkpoint import list_checkpoints, load_checkpoint_for_inference
from training.engine.data import ManifestChecksumError, write_manifest
from training.engine.run import run_training


@pytest.mark.parametrize("recipe", ["domain", "sequential", "style_tailoring"])
def test_each_recipe_trains_and_its_loss_falls(make_config, recipe):
    seen = []
    result = run_training(
        make_config(recipe=recipe, steps=8, checkpoint_every=4),
        progress=lambda step, total, loss: seen.append((step, total)),
    )
    assert result.status == "completed" and result.step == 8
    assert seen == [(s, 8) for s in range(1, 9)]
    early, late = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert late < 0.8 * early, result.losses
    assert [Path(p).name for p in result.checkpoints] == ["step-0000004", "step-0000008"]
    if recipe == "style_tailoring":
        assert {"alignment", "style"} == set(result.role_losses[0])
    if recipe == "sequential":
        assert [set(r) for r in result.role_losses] == [{"alignment"}] * 4 + [{"style"}] * 4


class Killed(Exception):
    pass


def _kill_at(step_to_die):
    def progress(step, total, loss):
        if step == step_to_die:
            raise Killed

    return progress


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_killed_and_resumed_run_equals_uninterrupted_run(make_config, tmp_path, adapter):
    options = {
        "recipe": "style_tailoring",
        "adapter": adapter,
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 2,
        "mix_ratio": 0.4,
        "gradient_accumulation_steps": 2,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 2,
        "use_ema": adapter == "lora",
        "adapter_params": {"rank": 2} if adapter == "lora" else {},
    }
    straight = run_training(make_config(output_dir=str(tmp_path / "straight"), **options))
    broken = make_config(output_dir=str(tmp_path / "broken"), **options)
    with pytest.raises(Killed):
        run_training(broken, progress=_kill_at(3))  # dies mid-way after the step-2 checkpoint
    resumed = run_training(broken, resume_from="latest")
    assert resumed.losses == straight.losses
    for relative in ("adapter", "ema"):
        a_dir = Path(straight.checkpoint_path) / relative
        if not a_dir.exists():
            continue
        for file in a_dir.glob("*.safetensors"):
            a, b = load_file(file), load_file(Path(resumed.checkpoint_path) / relative / file.name)
            assert a.keys() == b.keys()
            assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    lineage = json.loads((Path(resumed.checkpoint_path) / "lineage.json").read_text())
    assert lineage["resumed_from"].endswith("step-0000002")
    assert lineage["datasets"]["style"]["sha256"] == broken["datasets"]["style"]["sha256"]


def test_cancel_saves_a_resumable_checkpoint(make_config):
    config = make_config(steps=5)
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 2

    cancelled = run_training(config, should_cancel=should_cancel)
    assert cancelled.status == "cancelled" and cancelled.step == 2
    assert Path(cancelled.checkpoint_path).name == "step-0000002"
    finished = run_training(config, resume_from=cancelled.checkpoint_path)
    assert finished.status == "completed" and finished.step == 5 and len(finished.losses) == 5


def test_tampered_manifest_is_refused_before_training(make_config, toy_datasets, tmp_path):
    copy = tmp_path / "manifest.parquet"
    shutil.copy(toy_datasets["domain"]["manifest"], copy)
    copy.write_bytes(copy.read_bytes() + b"\0")
    datasets = {"domain": {**toy_datasets["domain"], "manifest": str(copy)}}
    with pytest.raises(ManifestChecksumError, match=str(copy)):
        run_training(make_config(datasets=datasets))
    assert not (tmp_path / "run").exists()


def test_bad_image_is_skipped_not_fatal(make_config, toy_datasets, tmp_path):
    import pyarrow.parquet as pq

    rows = pq.read_table(toy_datasets["domain"]["manifest"]).to_pylist()[:3]
    for row in rows:
        row["image_path"] = str(Path(toy_datasets["domain"]["image_root"]) / row["image_path"])
    rows.append({**rows[0], "image_sha256": "0" * 64, "image_path": str(tmp_path / "gone.png")})
    digest = write_manifest(tmp_path / "m.parquet", rows)
    datasets = {"domain": {"manifest": str(tmp_path / "m.parquet"), "sha256": digest}}
    result = run_training(make_config(datasets=datasets, steps=2))
    assert result.status == "completed" and result.skipped_images == ["0" * 64]


def test_latent_cache_is_filled_then_reused_with_the_same_training(make_config, tmp_path):
    cache = tmp_path / "latents"
    plain = run_training(make_config(output_dir=str(tmp_path / "plain"), steps=3))
    first = run_training(
        make_config(output_dir=str(tmp_path / "a"), steps=3, latent_cache_dir=str(cache))
    )
    files = sorted(cache.rglob("*.safetensors"))
    assert len(files) == 8  # every domain image once
    stamps = [f.stat().st_mtime_ns for f in files]
    second = run_training(
        make_config(output_dir=str(tmp_path / "b"), steps=3, latent_cache_dir=str(cache))
    )
    assert [f.stat().st_mtime_ns for f in sorted(cache.rglob("*.safetensors"))] == stamps
    assert first.losses == pytest.approx(plain.losses, rel=1e-4)
    assert second.losses == pytest.approx(first.losses, rel=1e-4)


def test_a_partly_filled_latent_cache_trains_the_same_weights_as_an_empty_or_full_one(
    make_config, tmp_path
):
    """What a run killed while writing a batch's latents leaves behind (some of its images
    cached, some not) must not change what the resumed run trains."""
    cache = tmp_path / "latents"

    def weights(name: str) -> dict[str, torch.Tensor]:
        result = run_training(
            make_config(output_dir=str(tmp_path / name), steps=3, latent_cache_dir=str(cache))
        )
        folder = Path(result.checkpoint_path) / "adapter"
        return {
            f"{f.name}:{k}": v
            for f in folder.glob("*.safetensors")
            for k, v in load_file(f).items()
        }

    empty = weights("empty")
    full = weights("full")
    files = sorted(cache.rglob("*.safetensors"))
    for stale in files[::3]:  # a torn batch: every third image's latent gone
        stale.unlink()
    partial = weights("partial")
    assert empty.keys() == full.keys() == partial.keys()
    assert all(torch.equal(empty[k], full[k]) for k in empty)
    assert all(torch.equal(empty[k], partial[k]) for k in empty), [
        k for k in empty if not torch.equal(empty[k], partial[k])
    ][:3]


def test_checkpoint_loads_for_inference_with_trained_weights(make_config):
    result = run_training(
        make_config(adapter="lora", steps=2, learning_rate=1e-2, use_ema=True, ema_decay=0.5)
    )
    components = load_checkpoint_for_inference(result.checkpoint_path)
    ema = load_file(Path(result.checkpoint_path) / "ema" / "ema.safetensors")
    parameters = dict(components["unet"].named_parameters())
    assert ema and all(torch.equal(parameters[name], value) for name, value in ema.items())
    raw = load_checkpoint_for_inference(result.checkpoint_path, use_ema=False)["unet"]
    assert any(not torch.equal(dict(raw.named_parameters())[n], v) for n, v in ema.items())
    assert components["lineage"]["adapter"] == "lora" and components["config"].steps == 2
    assert len(list_checkpoints(result.output_dir)) == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_lineage_records_the_torch_thread_count_a_checkpoint_was_trained_at(make_config, threads):
    # Reduction order, hence the weights' last bits, depend on it: a run-to-run difference at the
    # same code, data and seed is explained by this field differing.
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = run_training(make_config(steps=1))
    finally:
        torch.set_num_threads(previous)
    lineage = json.loads((Path(result.checkpoint_path) / "lineage.json").read_text())
    assert lineage["torch_threads"] == threads


def test_a_kill_while_a_checkpoint_is_written_resumes_from_the_last_complete_one(
    make_config, tmp_path, monkeypatch
):
    from training.engine.checkpoint import latest_checkpoint
    from training.engine.loop import Trainer

    options = {
        "adapter": "lora",
        "adapter_params": {"rank": 2},
        "steps": 6,
        "checkpoint_every": 2,
        "batch_size": 2,
        "keep_checkpoints": 2,
    }
    straight = run_training(make_config(output_dir=str(tmp_path / "straight"), **options))
    broken = make_config(output_dir=str(tmp_path / "broken"), **options)
    real = Trainer.lineage_record

    def dies_writing_step_4(self):
        if self.step == 4:
            raise Killed  # config.json of step 4 is written, the rest is not
        return real(self)

    monkeypatch.setattr(Trainer, "lineage_record", dies_writing_step_4)
    with pytest.raises(Killed):
        run_training(broken)
    monkeypatch.setattr(Trainer, "lineage_record", real)
    folder = Path(broken["output_dir"]) / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-0000002", "step-0000004.tmp"]
    assert [p.name for p in list_checkpoints(broken["output_dir"])] == ["step-0000002"]
    assert latest_checkpoint(broken["output_dir"]).name == "step-0000002"
    resumed = run_training(broken, resume_from="latest")
    assert resumed.losses == straight.losses
    assert sorted(p.name for p in folder.iterdir()) == ["step-0000004", "step-0000006"]


def test_result_lists_only_the_checkpoints_keep_checkpoints_left(make_config, tmp_path):
    config = make_config(
        output_dir=str(tmp_path / "kept"), steps=6, checkpoint_every=2, keep_checkpoints=2
    )
    result = run_training(config)
    assert [Path(p).name for p in result.checkpoints] == ["step-0000004", "step-0000006"]
    assert all(Path(p).is_dir() for p in result.checkpoints)
    assert result.checkpoints == [str(p) for p in list_checkpoints(config["output_dir"])]
    assert Path(result.checkpoint_path).name == "step-0000006"
