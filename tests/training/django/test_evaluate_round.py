"""evaluate_round end to end on the tiny base: three arms generated, scored and compared."""

from __future__ import annotations

import pytest

from curation.models import Job
from curation.services.jobs import JobContext
from training.models import RetrainRound
from training.services.evaluation import evaluate_round


@pytest.mark.django_db
def test_evaluate_round_scores_generated_arms(tiny_base, prompt_set, versions, settings):
    settings.EVAL_CLIP_WEIGHTS = ""
    round_ = RetrainRound.objects.create(
        name="eval smoke",
        base_checkpoint=tiny_base,
        checkpoint=tiny_base,
        prompt_set=prompt_set,
        eval_prompt_set=prompt_set,
        seeds=[0, 1],
        hyperparameters={"eval_sampler": {"steps": 2, "resolution": 32}},
    )
    round_.dataset_versions.set([versions["alignment"], versions["style"]])
    job = Job.objects.create(
        kind="retrain.step", status=Job.Status.RUNNING, attempt=1, attempt_token="t"
    )
    report = evaluate_round(round_, JobContext(job=job))

    assert report["scorer"]["model"] == "tiny-clip" and report["scorer"]["measurement"] is False
    new = report["summary"]["new"]
    assert new["n"] == 4 and new["prompts"] == 2
    for metric in ("text_score", "style_score", "content_leakage", "diversity"):
        assert new[metric] is not None and -1.0 <= new[metric] <= 2.0, metric
    # "new" and "previous" are the same checkpoint on the same seeds: identical images, so the
    # paired difference is exactly zero, interval included.
    same = report["comparisons"]["previous"]["text_score"]["difference"]
    assert same["estimate"] == 0.0 and same["ci"] == [0.0, 0.0]
    assert len(report["ranked"]) == 4 and report["best"] == []
    assert report["human"]["bradley_terry"]["votes"] == 0
