"""Retrain rounds: validation, the step chain (retry a failed step only), report and lineage."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.models import Dataset, Image, PromptSet
from curation.services.versions import add_items, create_draft_version, freeze_version
from training.models import Checkpoint, RetrainRound, RoundStep
from training.services import loops
from training.services.evaluation import checkpoint_lineage


def _version(kind: str, n: int = 2, offset: int = 0):
    dataset, _ = Dataset.objects.get_or_create(name=f"d-{kind}", kind=kind)
    version = create_draft_version(dataset)
    images = [
        Image.objects.create(sha256=f"{kind[:1]}{i + offset:063x}", storage_key=f"k{i}")
        for i in range(n)
    ]
    add_items(version, [{"image": img, "caption": "a sticker"} for img in images])
    return freeze_version(version)


@pytest.fixture
def setup_round(db):
    base = Checkpoint.objects.create(name="base", path="/models/base")
    alignment, style = _version("alignment"), _version("style", offset=10)
    gen = PromptSet.objects.create(name="gen", purpose="generation")
    ev = PromptSet.objects.create(name="eval", purpose="evaluation")
    return base, [alignment, style], gen, ev


@pytest.fixture
def recorded_steps(monkeypatch):
    calls: list[str] = []
    failures: dict[str, int] = {}

    def make(name):
        def step(round_, ctx):
            calls.append(name)
            if failures.get(name, 0) > 0:
                failures[name] -= 1
                raise RuntimeError(f"{name} broke")
            return {"did": name}

        return step

    monkeypatch.setattr(loops, "STEP_FUNCTIONS", {name: make(name) for name in RetrainRound.STEPS})
    monkeypatch.setattr("curation.services.jobs.dispatch", lambda *a, **k: None)
    return calls, failures


def _run_queued(round_: RetrainRound) -> None:
    from curation.models import Job
    from curation.services.jobs import execute_job

    while True:
        queued = (
            Job.objects.filter(kind="retrain.step", status__in=["queued"]).order_by("id").first()
        )
        if queued is None:
            return
        execute_job(queued.pk)


@pytest.mark.django_db
def test_start_refuses_drafts_and_missing_kinds(setup_round):
    base, (alignment, style), gen, ev = setup_round
    draft = create_draft_version(alignment.dataset)
    with pytest.raises(loops.RoundConfigError, match="must be frozen"):
        loops.start_retrain_round(
            base_checkpoint=base,
            dataset_versions=[draft, style],
            prompt_set=gen,
            eval_prompt_set=ev,
        )
    with pytest.raises(loops.RoundConfigError, match="alignment and a frozen style"):
        loops.start_retrain_round(
            base_checkpoint=base, dataset_versions=[style], prompt_set=gen, eval_prompt_set=ev
        )


@pytest.mark.django_db
def test_chain_runs_in_order_and_a_failed_step_is_retried_alone(
    setup_round, recorded_steps, settings
):
    settings.JOB_MAX_ATTEMPTS = 1
    calls, failures = recorded_steps
    failures["generate"] = 1
    base, versions, gen, ev = setup_round
    round_ = loops.start_retrain_round(
        base_checkpoint=base, dataset_versions=versions, prompt_set=gen, eval_prompt_set=ev
    )
    assert [s.name for s in round_.steps.all()] == list(RetrainRound.STEPS)
    _run_queued(round_)
    round_.refresh_from_db()
    assert calls == ["train", "evaluate", "generate"]
    assert round_.state == RetrainRound.State.FAILED
    failed = round_.steps.get(name="generate")
    assert failed.status == RoundStep.Status.FAILED and "generate broke" in failed.error

    from curation.services.jobs import retry_job

    retry_job(failed.job)
    _run_queued(round_)
    round_.refresh_from_db()
    assert calls == ["train", "evaluate", "generate", "generate", "push_rounds", "notify"]
    assert round_.state == RetrainRound.State.WAITING
    assert set(round_.steps.values_list("status", flat=True)) == {"succeeded"}


@pytest.mark.django_db
def test_report_page_and_export(client, data_lead, annotator, setup_round, recorded_steps):
    base, versions, gen, ev = setup_round
    round_ = loops.start_retrain_round(
        base_checkpoint=base, dataset_versions=versions, prompt_set=gen, eval_prompt_set=ev
    )
    new = Checkpoint.objects.create(name="new", path="/runs/1", parent=base, adapter="lora")
    new.dataset_versions.set(versions)
    report = {
        "summary": {
            arm: {
                "n": 4,
                "text_score": t,
                "style_score": 0.5,
                "diversity": 0.2,
                "text_score_ci": [t - 0.1, t + 0.1],
            }
            for arm, t in (("new", 0.31), ("previous", 0.22), ("prompt_engineered_base", 0.18))
        },
        "by_category": {"new": {"animals": {"n": 2, "text_score": 0.3, "style_score": 0.5}}},
        "best": [],
        "worst": [],
        "human": {
            "style_pass_rate": {"new": {"rate": 0.75, "ratings": 8, "ci": [0.5, 1.0]}},
            "alignment_rate": {},
            "differences": {},
            "bradley_terry": {"model": "Davidson", "votes": 10, "ranking": ["new"]},
            "win_rates": {
                "previous": {
                    "win_rate": 0.6,
                    "votes": 10,
                    "ties": 2,
                    "prompts": 5,
                    "ci": [0.3, 0.9],
                }
            },
        },
        "lineage": checkpoint_lineage(new),
    }
    RetrainRound.objects.filter(pk=round_.pk).update(report=report, checkpoint=new)
    url = reverse("round-report", args=[round_.pk])
    client.force_login(annotator)
    assert client.get(url).status_code == 302
    client.force_login(data_lead)
    page = client.get(url).content.decode()
    assert "0.3100" in page and "0.2200" in page and "<svg" in page
    assert "win rate vs previous" in page and "0.6" in page
    assert versions[0].checksum[:12] in page  # lineage back to the exact versions
    export = client.get(url + "?export=1")
    assert export["Content-Disposition"].startswith("attachment;")
    assert "Download as HTML" not in export.content.decode()


@pytest.mark.django_db
def test_lineage_walks_parents_to_versions(setup_round):
    base, versions, _, _ = setup_round
    base.dataset_versions.set([versions[0]])
    child = Checkpoint.objects.create(name="child", path="/c", parent=base)
    child.dataset_versions.set(versions)
    chain = checkpoint_lineage(child)["chain"]
    assert [node["name"] for node in chain] == ["child", "base"]
    assert {v["checksum"] for v in chain[0]["dataset_versions"]} == {v.checksum for v in versions}


@pytest.mark.django_db
def test_start_through_the_api_per_role(
    api_client, annotator, data_lead, setup_round, recorded_steps
):
    base, versions, gen, ev = setup_round
    payload = {
        "base_checkpoint": base.pk,
        "dataset_versions": [v.pk for v in versions],
        "prompt_set": gen.pk,
        "eval_prompt_set": ev.pk,
    }
    url = reverse("retrainround-start")
    api_client.force_authenticate(annotator)
    assert api_client.post(url, payload, format="json").status_code == 403
    api_client.force_authenticate(data_lead)
    response = api_client.post(url, payload, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["recipe"] == "style_tailoring" and [s["name"] for s in body["steps"]] == list(
        RetrainRound.STEPS
    )
    bad = api_client.post(url, {**payload, "dataset_versions": [versions[1].pk]}, format="json")
    assert bad.status_code == 400 and "alignment" in str(bad.json())


@pytest.mark.django_db
def test_admin_add_form_starts_a_round(client, data_lead, annotator, setup_round, recorded_steps):
    base, versions, gen, ev = setup_round
    url = reverse("admin:training_retrainround_add")
    client.force_login(annotator)
    assert client.get(url).status_code == 302
    client.force_login(data_lead)
    form = client.get(url)
    assert form.status_code == 200
    assert sorted(form.context["adminform"].form.initial["dataset_versions"]) == sorted(
        v.pk for v in versions
    )
    response = client.post(
        url,
        {
            "name": "from admin",
            "recipe": "style_tailoring",
            "adapter": "lora",
            "base_checkpoint": base.pk,
            "dataset_versions": [v.pk for v in versions],
            "prompt_set": gen.pk,
            "eval_prompt_set": ev.pk,
            "seeds": "[0, 1]",
            "hyperparameters": '{"steps": 6}',
        },
        follow=True,
    )
    assert response.status_code == 200
    assert any("started" in str(m) for m in response.context["messages"]), (
        response.content.decode()[-3000:]
    )
    round_ = RetrainRound.objects.get(name="from admin")
    assert round_.hyperparameters == {"steps": 6} and round_.steps.count() == 5
    wrong = client.post(
        url,
        {
            "name": "bad",
            "recipe": "style_tailoring",
            "adapter": "lora",
            "base_checkpoint": base.pk,
            "dataset_versions": [versions[1].pk],
            "prompt_set": gen.pk,
            "eval_prompt_set": ev.pk,
            "seeds": "[0]",
            "hyperparameters": "{}",
        },
    )
    assert wrong.status_code == 200 and "needs a frozen alignment" in wrong.content.decode()
    assert not RetrainRound.objects.filter(name="bad").exists()


@pytest.mark.django_db
def test_admin_change_page_of_a_started_round_opens(client, data_lead, setup_round, recorded_steps):
    """A started round's page shows every field read-only; it used to fail with KeyError 'name'."""
    base, versions, gen, ev = setup_round
    round_ = loops.start_retrain_round(
        base_checkpoint=base, dataset_versions=versions, prompt_set=gen, eval_prompt_set=ev
    )
    client.force_login(data_lead)
    response = client.get(reverse("admin:training_retrainround_change", args=[round_.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    for name in RetrainRound.STEPS:
        assert name in page


@pytest.mark.django_db
def test_round_page_timeline_refreshes_and_retries_a_failed_step(
    client, data_lead, annotator, setup_round, recorded_steps, settings
):
    settings.JOB_MAX_ATTEMPTS = 1
    calls, failures = recorded_steps
    failures["evaluate"] = 1
    base, versions, gen, ev = setup_round
    round_ = loops.start_retrain_round(
        base_checkpoint=base, dataset_versions=versions, prompt_set=gen, eval_prompt_set=ev
    )
    page_url = reverse("admin:training_retrainround_change", args=[round_.pk])
    json_url = reverse("admin:training_retrainround_timeline", args=[round_.pk])
    retry_url = reverse("admin:training_retrainround_retry_step", args=[round_.pk])
    client.force_login(annotator)
    assert client.get(json_url).status_code == 302  # not staff: sent to the login page
    client.force_login(data_lead)

    running = client.get(page_url).content.decode()
    assert 'data-active="true"' in running and 'name="_save"' not in running
    timeline = client.get(json_url).json()
    assert timeline["active"] and [s["status"] for s in timeline["steps"]][:2] == [
        "pending",
        "pending",
    ]

    _run_queued(round_)
    timeline = client.get(json_url).json()
    assert [s["status"] for s in timeline["steps"]] == [
        "succeeded",
        "failed",
        "pending",
        "pending",
        "pending",
    ]
    assert not timeline["active"] and "evaluate broke" in timeline["steps"][1]["error"]
    failed_page = client.get(page_url).content.decode()
    assert 'data-active="false"' in failed_page
    assert 'value="evaluate"' in failed_page and "Retry step" in failed_page
    assert "evaluate broke" in failed_page

    # Retrying a step that did not fail says so and changes nothing.
    refused = client.post(retry_url, {"step": "train"}, follow=True)
    assert "has not failed; nothing to retry" in refused.content.decode()
    response = client.post(retry_url, {"step": "evaluate"}, follow=True)
    assert "step evaluate queued again" in response.content.decode()
    round_.refresh_from_db()
    assert round_.state == RetrainRound.State.RUNNING
    assert client.get(json_url).json()["active"]
    _run_queued(round_)
    timeline = client.get(json_url).json()
    assert {s["status"] for s in timeline["steps"]} == {"succeeded"} and not timeline["active"]
    assert calls == ["train", "evaluate", "evaluate", "generate", "push_rounds", "notify"]
    done = client.get(page_url).content.decode()
    assert "Retry step" not in done and "{&#x27;did" not in done and "did" in done
