"""Each style method trains through the same `train` job as any run: create_training_run, then
enqueue_training and execute_job, ending in a Checkpoint that records its adapter and versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from curation.models import Job
from curation.services import jobs as job_services
from training.models import Checkpoint, TrainingRun
from training.services.runs.inputs import create_training_run
from training.services.runs.jobs import enqueue_training

TINY = {"steps": 2, "checkpoint_every": 2, "batch_size": 2}


def _train(run: TrainingRun, user, capture) -> Checkpoint:
    with capture(execute=True):
        job = enqueue_training(run, user)
    assert job.kind == "train" and job.queue == "gpu"
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED
    checkpoint = Checkpoint.objects.get(training_run=run)
    assert job.result["checkpoint"] == checkpoint.pk
    return checkpoint


def _saved_keys(checkpoint: Checkpoint) -> list[str]:
    weights = Path(checkpoint.path, "adapter", "adapter_model.safetensors")
    with safe_open(str(weights), framework="pt") as handle:
        return list(handle.keys())


def _assert_lineage(checkpoint: Checkpoint, used, tiny_base) -> None:
    assert checkpoint.parent == tiny_base
    assert set(checkpoint.dataset_versions.all()) == set(used)
    platform = checkpoint.lineage["platform"]
    assert {(v["id"], v["checksum"]) for v in platform["dataset_versions"]} == {
        (v.pk, v.checksum) for v in used
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("adapter", "params"),
    [
        ("styledrop", {"rank": 2, "style_descriptor": "in flat sticker style"}),
        ("kv_lora", {"rank": 2}),
        ("styleinject", {"branches": 2, "rank": 2}),
    ],
)
def test_adapter_method_trains_through_the_train_job(
    adapter,
    params,
    versions,
    tiny_base,
    data_lead,
    no_dispatch,
    django_capture_on_commit_callbacks,
):
    used = [versions["domain"]]
    run = create_training_run(
        recipe="domain",
        adapter=adapter,
        dataset_versions=used,
        base_checkpoint=tiny_base,
        hyperparameters={**TINY, "adapter_params": params},
        user=data_lead,
    )
    checkpoint = _train(run, data_lead, django_capture_on_commit_callbacks)
    assert checkpoint.adapter == adapter and checkpoint.step == 2
    assert checkpoint.config["adapter"] == adapter
    assert checkpoint.config["adapter_params"] == params
    _assert_lineage(checkpoint, used, tiny_base)
    engine = checkpoint.lineage["datasets"]["domain"]
    assert engine["sha256"] == used[0].checksum and engine["version_id"] == str(used[0].pk)

    keys = _saved_keys(checkpoint)
    assert keys, "no adapter weights saved"
    if adapter == "kv_lora":
        # FineStyle: only cross-attention keys and values carry weights, both of them.
        assert all(".attn2.to_k." in k or ".attn2.to_v." in k for k in keys), keys
        assert any(".attn2.to_k." in k for k in keys) and any(".attn2.to_v." in k for k in keys)
    elif adapter == "styleinject":
        assert any("router" in k for k in keys), keys
    # An adapter, not a full UNet: no frozen base weight is in the file.
    assert not any(k.endswith("to_q.weight") or k.endswith("conv_in.weight") for k in keys)


@pytest.mark.django_db
def test_styledrop_iterative_with_clip_feedback_through_the_train_job(
    versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    used = [versions["style"]]
    run = create_training_run(
        recipe="styledrop_iterative",
        adapter="styledrop",
        dataset_versions=used,
        base_checkpoint=tiny_base,
        hyperparameters={
            **TINY,
            "adapter_params": {"rank": 2},
            "styledrop": {"feedback": "clip", "prompts": ["a cat"], "seeds": [0, 1], "top_k": 1},
        },
        user=data_lead,
    )
    assert run.hyperparameters["styledrop"]["clip_model"] == "tiny-clip"
    checkpoint = _train(run, data_lead, django_capture_on_commit_callbacks)
    assert checkpoint.adapter == "styledrop"
    _assert_lineage(checkpoint, used, tiny_base)
    detail = checkpoint.lineage["styledrop_iterative"]
    assert detail["iteration"] == 2 and detail["feedback"] == "clip"
    assert _saved_keys(checkpoint)


@pytest.mark.django_db
def test_unknown_adapter_param_fails_the_job_naming_the_key(
    versions, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    run = create_training_run(
        recipe="domain",
        adapter="styleinject",
        dataset_versions=[versions["domain"]],
        base_checkpoint=tiny_base,
        hyperparameters={**TINY, "adapter_params": {"branches": 2, "bogus": 1}},
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_training(run, data_lead)
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status != Job.Status.SUCCEEDED and "adapter_params.bogus" in job.error
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert not Checkpoint.objects.filter(training_run=run).exists()
