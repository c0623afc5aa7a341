"""A trade-off sweep on the platform, in the small toy world: started through the API by a data
lead, run as a job, resumed after a failure without retraining a finished arm, and drawn on the
round report as the text-alignment vs style-similarity plane with the paper's headline table.

Runtime: about a minute on an idle 2-core machine once the toy world is cached (3 arms × 2
training steps, 4 batches of 4 prompts × 2 seeds at 12 sampler steps).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.models import Job
from curation.services.jobs import execute_job
from tests.training.sweeps.conftest import SWEEP_SETTINGS
from training.models import GenerationBatch, TradeoffSweep, TrainingRun
from training.services import sweeps

pytestmark = pytest.mark.slow
START = "/api/training/tradeoff-sweeps/start/"


def test_a_lead_starts_a_sweep_a_failure_resumes_without_retraining_and_the_report_draws_it(
    toy, data_lead, annotator, api_client, client, settings, no_dispatch, monkeypatch
):
    settings.JOB_MAX_ATTEMPTS = 1
    round_ = toy["round"]
    payload = {"retrain_round": round_.pk, "settings": SWEEP_SETTINGS}

    api_client.force_authenticate(annotator)
    assert api_client.post(START, payload, format="json").status_code == 403
    api_client.force_authenticate(data_lead)
    bad = api_client.post(
        START, {**payload, "settings": {**SWEEP_SETTINGS, "t_s_values": [300, 1500]}}, format="json"
    )
    assert bad.status_code == 400 and "t_s_values" in str(bad.json()), bad.json()
    only_style = api_client.post(
        START, {**payload, "dataset_versions": [toy["versions"][1].pk]}, format="json"
    )
    assert only_style.status_code == 400, only_style.json()
    assert "alignment" in str(only_style.json()["dataset_versions"])

    response = api_client.post(START, payload, format="json")
    assert response.status_code == 201, response.json()
    sweep = TradeoffSweep.objects.get(pk=response.json()["id"])
    assert sweep.retrain_round == round_ and sweep.job.queue == "gpu"
    assert sweep.job.status == Job.Status.QUEUED and sweep.job.kind == "tradeoff_sweep"

    # First attempt: every arm trains and generates, then scoring fails.
    real_scored = sweeps._scored_arm

    def broken(*args, **kwargs):
        raise RuntimeError("scorer fell over")

    monkeypatch.setattr(sweeps, "_scored_arm", broken)
    execute_job(sweep.job_id)
    sweep.refresh_from_db()
    assert sweep.status == TradeoffSweep.Status.FAILED and "scorer fell over" in sweep.error
    trained = {arm: a["checkpoint"] for arm, a in sweep.arms.items() if "checkpoint" in a}
    assert set(trained) == {
        "sequential",
        "style_tailoring t_s=300 mix=0.5",
        "style_tailoring t_s=700 mix=0.5",
    }
    runs = TrainingRun.objects.count()
    recipes = TrainingRun.objects.values_list("recipe", "hyperparameters__t_s")
    assert sorted(recipes, key=str) == sorted(
        [("sequential", None), ("style_tailoring", 300), ("style_tailoring", 700)], key=str
    )

    # Resume through the API: nothing is trained again, the report is written.
    monkeypatch.setattr(sweeps, "_scored_arm", real_scored)
    resumed = api_client.post(f"/api/training/tradeoff-sweeps/{sweep.pk}/resume/")
    assert resumed.status_code == 202, resumed.json()
    execute_job(sweep.job_id)
    sweep.refresh_from_db()
    assert sweep.status == TradeoffSweep.Status.SUCCEEDED, sweep.error
    assert TrainingRun.objects.count() == runs
    assert {arm: a["checkpoint"] for arm, a in sweep.arms.items() if "checkpoint" in a} == trained
    assert Job.objects.get(pk=sweep.job_id).progress_done == 1000

    report = sweep.report
    assert report["scorer"]["toy_world"] and report["scorer"]["measurement"]
    arms = {*trained, sweeps.BASELINE}
    assert set(report["points"]) == arms
    assert set(report["batches"]) == arms
    for arm, batch in report["batches"].items():  # same prompts and seeds for every arm
        assert GenerationBatch.objects.get(pk=batch).generations.count() == 4 * 2, arm
    for point in report["points"].values():
        assert point["text_ci"][0] <= point["text"] <= point["text_ci"][1]
        assert point["style_ci"][0] <= point["style"] <= point["style_ci"][1]
    assert report["pareto_front"] and set(report["pareto_front"]) <= arms
    headline = report["headline"]
    assert headline["best_run"].startswith("style_tailoring")
    for key in ("style_pass_rate", "prompt_alignment", "scene_diversity"):
        assert headline[key] is None or headline[key]["clusters"] == 4, key
    assert headline["prompt_alignment"]["low"] <= headline["prompt_alignment"]["estimate"]

    client.force_login(data_lead)
    page = client.get(reverse("round-report", args=[round_.pk])).content.decode()
    assert "Trade-off sweep: sequential vs Style Tailoring" in page
    assert page.count('class="plot sweep-plane"><svg') == 1
    for arm in arms:
        assert f'data-arm="{arm}"' in page
    assert 'data-metric="style_pass_rate"' in page and "+14.0 %" in page
    assert "Not a measurement" not in page  # the toy CLIP measures, within the toy world


def test_a_queued_sweep_is_cancelled_and_the_round_admin_action_starts_one(
    toy, data_lead, client, no_dispatch
):
    sweep = sweeps.start_sweep_for_round(toy["round"], settings=SWEEP_SETTINGS, user=data_lead)
    sweeps.cancel_sweep(sweep)
    sweep.refresh_from_db()
    assert sweep.job.status == Job.Status.CANCELLED
    assert sweep.status == TradeoffSweep.Status.CANCELLED
    with pytest.raises(sweeps.SweepNotRetryable, match="not running"):
        sweeps.cancel_sweep(sweep)

    client.force_login(data_lead)
    response = client.post(
        reverse("admin:training_retrainround_changelist"),
        {"action": "start_sweep", "_selected_action": [toy["round"].pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "queued on the gpu queue" in response.content.decode()
    started = TradeoffSweep.objects.exclude(pk=sweep.pk).get()
    assert started.retrain_round == toy["round"] and started.job.status == Job.Status.QUEUED
    assert started.settings["t_s_values"] == sweeps.DEFAULT_SETTINGS["t_s_values"]
    page = client.get(reverse("admin:training_tradeoffsweep_change", args=[started.pk]))
    assert "no report yet" in page.content.decode()
