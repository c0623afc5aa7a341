"""The `styledrop_iterative` recipe end to end on the tiny CPU model: references → train →
generate → select (CLIP, or a stub standing in for annotators) → train on the selection, with
resume from the saved state and `FeedbackPending` for judgements that are not in yet."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from training.engine.checkpoint import read_checkpoint_config, read_lineage
from training.engine.config import ConfigError, TrainConfig
from training.engine.data import read_manifest
from training.engine.run import run_training
from training.engine.styledrop_iterative import (
    FeedbackPending,
    StyleDropIterativeResult,
    run_styledrop_iterative_training,
)

DESCRIPTOR = "in flat sticker style"
PROMPTS = ["a red circle", "a blue square"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def base_and_references(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from training.engine.tiny import save_tiny_base_model
    from training.engine.toydata import write_toy_dataset

    root = tmp_path_factory.mktemp("styledrop_iterative")
    return save_tiny_base_model(root / "base"), write_toy_dataset(root / "refs", "style", 2, seed=0)


def make_config(base: Path, references: dict[str, str], out: Path, **styledrop: Any) -> dict:
    settings = {
        "iterations": 2,
        "feedback": "clip",
        "prompts": PROMPTS,
        "seeds": SEEDS,
        "top_k": 2,
        "style_descriptor": DESCRIPTOR,
        "sampler": {"steps": 2, "guidance_scale": 1.0},
        "clip_model": "tiny-clip",
        **styledrop,
    }
    return {
        "recipe": "styledrop_iterative",
        "base_model": str(base),
        "output_dir": str(out / "run"),
        "datasets": {"references": references},
        "adapter": "styledrop",
        "adapter_params": {"rank": 2},
        "resolution": 32,
        "batch_size": 2,
        "steps": 2,
        "checkpoint_every": 2,
        "learning_rate": 1e-2,
        "seed": 0,
        "latent_cache_dir": str(out / "latents"),
        "styledrop": settings,
    }


def cached_images(config: dict) -> set[str]:
    """sha256 of every image whose latents were encoded: exactly the images some step trained on."""
    return {p.stem for p in Path(config["latent_cache_dir"]).rglob("*.safetensors")}


def adapter_weights(checkpoint: str) -> dict[str, torch.Tensor]:
    return load_file(Path(checkpoint) / "adapter" / "adapter_model.safetensors")


def file_times(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clip_run(base_and_references, tmp_path_factory) -> tuple[dict, StyleDropIterativeResult]:
    base, references = base_and_references
    config = make_config(base, references, tmp_path_factory.mktemp("clip"))
    result = run_training(config, device="cpu")  # the same entry point as every other recipe
    return config, result


# ---- configuration (no model) -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"iterations": 0}, "styledrop.iterations"),
        ({"feedback": "vibes"}, "styledrop.feedback"),
        ({"top_k": None}, "styledrop.top_k"),
        ({"top_k": 0}, "styledrop.top_k"),
        ({"threshold": "high"}, "styledrop.threshold"),
        ({"feedback": "human"}, "styledrop.top_k"),  # top_k means nothing to annotators
        ({"prompts": []}, "styledrop.prompts"),
        ({"seeds": [1, 1]}, "styledrop.seeds"),
        ({"sampler": {"steps": 0}}, "styledrop.sampler.steps"),
        ({"tpo_k": 2}, "styledrop.tpo_k"),
    ],
)
def test_bad_settings_name_their_field(tmp_path, change, field) -> None:
    config = make_config(tmp_path, {"manifest": "m.parquet", "sha256": "0" * 64}, tmp_path)
    config["styledrop"].update(change)
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(config)
    assert error.value.field == field


def test_references_are_required_and_settings_belong_to_the_recipe(tmp_path) -> None:
    config = make_config(tmp_path, {"manifest": "m.parquet", "sha256": "0" * 64}, tmp_path)
    TrainConfig.from_dict(config)  # valid as written
    one_round = copy.deepcopy(config)
    one_round["styledrop"] = {"iterations": 1, "top_k": 1}
    TrainConfig.from_dict(one_round)  # one iteration generates nothing: prompts not needed
    missing = dict(config, datasets={"style": config["datasets"]["references"]})
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(missing)
    assert error.value.field == "datasets.references"
    elsewhere = dict(config, recipe="domain", datasets={"domain": config["datasets"]["references"]})
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(elsewhere)
    assert error.value.field == "styledrop"


def test_human_feedback_needs_a_callback(tmp_path) -> None:
    config = make_config(tmp_path, {"manifest": "m.parquet", "sha256": "0" * 64}, tmp_path)
    config["styledrop"].update(feedback="human", top_k=None)
    with pytest.raises(ValueError, match="human_feedback"):
        run_styledrop_iterative_training(config, device="cpu")
    assert not Path(config["output_dir"]).exists(), "refused before writing anything"


# ---- clip feedback ------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_iterations_report_checkpoints_and_selection(clip_run) -> None:
    config, result = clip_run
    assert isinstance(result, StyleDropIterativeResult)
    assert result.status == "completed"
    assert (result.step, result.total_steps) == (4, 4)
    assert [i.iteration for i in result.iterations] == [1, 2]
    checkpoints = [i.checkpoint_path for i in result.iterations]
    assert result.checkpoints == checkpoints and len(set(checkpoints)) == 2
    assert all((Path(c) / "adapter" / "adapter_model.safetensors").is_file() for c in checkpoints)
    assert result.checkpoint_path == checkpoints[1]

    first, second = result.iterations
    stats = first.selection
    assert stats["mode"] == "clip"
    assert (stats["generated"], stats["selected"], stats["rejected"]) == (4, 2, 2)
    assert stats["rejection_reasons"] == {"outside top_k": 2}
    assert stats["mean_score_selected"] >= stats["mean_score"]
    decisions = json.loads(Path(first.selection_file).read_text())["decisions"]
    ranked = sorted(decisions, key=lambda d: -d["score"])
    assert [d["generation_id"] for d in ranked[:2]] == stats["selected_ids"]
    assert second.selection is None and second.generations_dir is None  # the last one stops

    lineage = read_lineage(second.checkpoint_path)["styledrop_iterative"]
    assert lineage["iteration"] == 2
    assert Path(config["output_dir"], lineage["initialized_from"]) == Path(first.checkpoint_path)
    assert second.initialized_from == first.checkpoint_path
    # Warm start: LoRA's B starts at zero and an Adam step moves a weight by at most about the
    # learning rate, so `steps` steps from scratch stay within steps x lr; iteration 2 went further.
    reach = {
        name: max(t.abs().max().item() for k, t in adapter_weights(c).items() if "lora_B" in k)
        for name, c in (("first", first.checkpoint_path), ("second", second.checkpoint_path))
    }
    bound = config["steps"] * config["learning_rate"]
    assert reach["first"] <= bound * 1.01 < 1.1 * bound < reach["second"]


@pytest.mark.slow
def test_each_iteration_trains_on_exactly_its_manifest(clip_run) -> None:
    config, result = clip_run
    first, second = result.iterations
    references = read_manifest(config["datasets"]["references"]["manifest"])

    rows_1 = read_manifest(first.train_manifest, first.train_manifest_sha256)
    assert [r.image_sha256 for r in rows_1] == [r.image_sha256 for r in references]
    assert [r.caption for r in rows_1] == [f"{r.caption}, {DESCRIPTOR}" for r in references]
    assert first.trained_on == {"references": 2, "generations": 0}

    generations = [
        json.loads(line) for line in Path(first.generations_index).read_text().splitlines()
    ]
    assert len(generations) == len(PROMPTS) * len(SEEDS)
    selected = [g for g in generations if g["id"] in first.selection["selected_ids"]]
    rejected = [g for g in generations if g["id"] not in first.selection["selected_ids"]]
    assert len(selected) == 2

    import pyarrow.parquet as pq

    table = pq.read_table(second.train_manifest).to_pylist()
    assert second.trained_on == {"references": 2, "generations": 2}  # keep_references defaults on
    assert [r["image_sha256"] for r in table] == [r.image_sha256 for r in references] + [
        g["image_sha256"] for g in selected
    ]
    made = [r for r in table if r["origin"] == "generation"]
    assert [r["generation_id"] for r in made] == [g["id"] for g in selected]
    assert all(r["source_iteration"] == 1 for r in made)
    assert [r["caption"] for r in made] == [f"{g['prompt']}, {DESCRIPTOR}" for g in selected]

    # The checkpoint names the manifest it read, and only its rows ever reached the VAE.
    trained = read_checkpoint_config(second.checkpoint_path).datasets["domain"]
    assert (trained.manifest, trained.sha256) == (
        second.train_manifest,
        second.train_manifest_sha256,
    )
    encoded = cached_images(config)
    assert encoded == {r.image_sha256 for r in references} | {g["image_sha256"] for g in selected}
    assert not encoded & {g["image_sha256"] for g in rejected} - {
        g["image_sha256"] for g in selected
    }


class Killed(RuntimeError):
    pass


@pytest.mark.slow
def test_a_killed_run_restarts_after_its_last_finished_iteration(
    base_and_references, clip_run, tmp_path
) -> None:
    uninterrupted = clip_run[1]
    base, references = base_and_references
    config = make_config(base, references, tmp_path)

    def crash_in_iteration_two(step: int, total: int, loss: float) -> None:
        if step == 3:  # first step of iteration 2, before its first checkpoint
            raise Killed("power cut")

    with pytest.raises(Killed):
        run_training(config, device="cpu", progress=crash_in_iteration_two)
    state = json.loads(Path(config["output_dir"], "styledrop_state.json").read_text())
    assert state["iterations"]["1"]["stage"] == "selected"
    assert state["iterations"]["2"]["stage"] == "prepared"
    first_dir = Path(config["output_dir"], "iteration-01")
    before = file_times(first_dir)

    seen: list[int] = []
    result = run_training(
        config, device="cpu", progress=lambda step, total, loss: seen.append(step)
    )
    assert result.status == "completed"
    assert seen == [3, 4], "iteration 1 was trained again"
    assert file_times(first_dir) == before, "iteration 1's checkpoint or generations were rewritten"
    assert [i.selection for i in result.iterations] == [
        i.selection for i in uninterrupted.iterations
    ]
    resumed = adapter_weights(result.checkpoint_path)
    expected = adapter_weights(uninterrupted.checkpoint_path)
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)

    with pytest.raises(ConfigError) as error:
        run_training(dict(config, learning_rate=5e-3), device="cpu")
    assert error.value.field == "learning_rate"


# ---- human feedback -----------------------------------------------------------------------------
@pytest.mark.slow
def test_human_feedback_waits_then_trains_on_exactly_the_passed_subset(
    base_and_references, tmp_path
) -> None:
    base, references = base_and_references
    config = make_config(
        base, references, tmp_path, feedback="human", top_k=None, keep_references=False
    )
    asked: list[list[tuple[str, str]]] = []

    def annotators_busy(generations):
        asked.append([(g.id, g.image) for g in generations])
        raise FeedbackPending("round 7 open", round_id=7)

    with pytest.raises(FeedbackPending) as pending:
        run_styledrop_iterative_training(config, device="cpu", human_feedback=annotators_busy)
    assert pending.value.iteration == 1 and pending.value.details == {"round_id": 7}
    assert [g.id for g in pending.value.generations] == [i for i, _ in asked[0]]
    assert all(Path(image).is_file() for _, image in asked[0])

    passed = {"i1-p0-s1", "i1-p1-s0"}  # a fixed subset, as annotators might pass

    def annotators_done(generations):
        asked.append([(g.id, g.image) for g in generations])
        assert all(g.metadata["image_sha256"] and g.metadata["iteration"] == 1 for g in generations)
        return {g.id: g.id in passed for g in generations}

    seen: list[int] = []
    result = run_styledrop_iterative_training(
        config,
        device="cpu",
        human_feedback=annotators_done,
        progress=lambda step, total, loss: seen.append(step),
    )
    assert asked[1] == asked[0], "the generations under review changed between calls"
    assert seen == [3, 4], "iteration 1 was trained again after the wait"
    first, second = result.iterations
    assert first.selection["mode"] == "human"
    assert set(first.selection["selected_ids"]) == passed
    assert first.selection["rejection_reasons"] == {"failed review": 2}
    assert second.trained_on == {"references": 0, "generations": 2}

    import pyarrow.parquet as pq

    rows = pq.read_table(second.train_manifest).to_pylist()
    assert {r["generation_id"] for r in rows} == passed
    assert {r["origin"] for r in rows} == {"generation"}
    by_id = {
        json.loads(line)["id"]: json.loads(line)
        for line in Path(first.generations_index).read_text().splitlines()
    }
    passed_images = {by_id[i]["image_sha256"] for i in passed}
    failed_images = {g["image_sha256"] for i, g in by_id.items() if i not in passed} - passed_images
    reference_images = {r.image_sha256 for r in read_manifest(references["manifest"])}
    assert cached_images(config) == reference_images | passed_images
    assert not cached_images(config) & failed_images
