"""The whole loop, as a data lead runs it: real Label Studio, a real worker process, tiny models.

Stages up to the curated versions run in-process through the demo stage functions (the demo
script annotates in Label Studio through each demo annotator's own account); the retrain round
is then started by clicking through the admin in Debian's chromium, run by a worker process, and
its report is opened in the browser.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from curation.models import AnnotationRound, DatasetVersion, PromptSet
from curation.services.demo import ensure_demo_logins, load_demo_fixtures
from tests.browser import chromium_page, screenshot
from tests.conftest import PYTHON, ROOT, subprocess_env
from training.models import RetrainRound, RoundStep

pytestmark = [
    pytest.mark.slow,
    pytest.mark.labelstudio,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

TINY = {"steps": 6, "checkpoint_every": 3}


@pytest.fixture
def platform(settings, live_server, ls_server, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls between page
    # actions are still synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.LABEL_STUDIO_URL = ls_server.url
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.LABEL_STUDIO_ADMIN_EMAIL = ls_server.username
    settings.LABEL_STUDIO_ADMIN_PASSWORD = ls_server.password
    settings.LABEL_STUDIO_WEBHOOK_SECRET = secrets.token_urlsafe(16)
    settings.PLATFORM_PUBLIC_URL = live_server.url
    return live_server


def _curated_versions(lead) -> tuple[list[DatasetVersion], object]:
    from curation.services.demo_domain import demo_domain_dataset
    from curation.services.demo_rounds import demo_annotate, demo_rating_rounds
    from training.services.demo_training import demo_generate, demo_train_domain

    annotators = list(
        get_user_model().objects.filter(groups__name="annotator").order_by("username")
    )
    domain = demo_domain_dataset(lead)
    checkpoint = demo_train_domain(domain, lead, steps=4)
    batch = demo_generate(checkpoint, PromptSet.objects.get(name="demo-generation"), lead)
    curated = []
    for rating_round in demo_rating_rounds(batch, lead):
        demo_annotate(rating_round, annotators, user=lead)
        rating_round.refresh_from_db()
        assert rating_round.state == AnnotationRound.State.CURATED
        curated.append(rating_round.result_version)
    return curated, checkpoint


def test_data_lead_runs_a_retrain_round_from_the_admin(platform, tmp_path):
    load_demo_fixtures(ROOT / "fixtures" / "demo.json")
    # As the demo does: the session's Label Studio may already hold these annotators' accounts
    # (the README-logins test signs them up), and the platform must log in as each of them.
    ensure_demo_logins(ROOT / "fixtures" / "demo.json")
    lead = get_user_model().objects.get(username="lead")
    curated, domain_checkpoint = _curated_versions(lead)
    assert {v.dataset.kind for v in curated} == {"alignment", "style"}
    assert all(v.is_frozen and v.row_count > 0 for v in curated)

    with chromium_page(platform.url) as page:
        page.goto("/admin/login/")
        page.fill("#id_username", "lead")
        page.fill("#id_password", "lead-demo-pass")
        page.click('input[type="submit"]')
        page.goto("/admin/training/retrainround/add/")
        # The form comes prefilled with the newest curated versions, checkpoint and prompt sets.
        selected = page.eval_on_selector_all(
            "#id_dataset_versions option:checked", "els => els.map(e => e.value)"
        )
        assert sorted(int(v) for v in selected) == sorted(v.pk for v in curated)
        page.fill("#id_name", "e2e round")
        page.fill("#id_hyperparameters", json.dumps(TINY))
        screenshot(page, "retrain-round-form")
        page.click('input[name="_save"]')
        errors = page.locator(".errorlist, .errornote").all_inner_texts()
        assert not errors, errors
        screenshot(page, "retrain-round-saved")
        assert page.locator(".messagelist").count() == 1, (
            page.url + page.inner_text("#content")[:2000]
        )
        assert "started" in page.inner_text(".messagelist")

        round_ = RetrainRound.objects.get(name="e2e round")
        assert round_.base_checkpoint == domain_checkpoint
        worker = subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), "worker", "--queues", "default,cpu,gpu", "--batch"],
            env=subprocess_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
        round_.refresh_from_db()
        failed = round_.steps.exclude(status=RoundStep.Status.SUCCEEDED).values_list(
            "name", "error"
        )
        assert not failed, list(failed)
        assert round_.state == RetrainRound.State.WAITING

        page.goto(reverse("round-report", args=[round_.pk]))
        assert page.inner_text("#round-state") == "Waiting for annotators"
        assert page.locator("#trend-plot svg").count() == 1
        assert page.locator("#category-plot svg").count() == 1
        rows = page.locator("#metrics tr[data-arm]")
        assert rows.count() == 3
        text_scores = [float(t) for t in page.locator("#metrics .text-score").all_inner_texts()]
        assert all(-1.0 <= t <= 1.0 for t in text_scores)
        screenshot(page, "retrain-round-report")
        with page.expect_download() as download:
            page.click("#export-link")
        exported = Path(download.value.path()).read_text()
        assert "data:image/png;base64," in exported and "<svg" in exported

    report = round_.report
    n_eval = PromptSet.objects.get(name="demo-evaluation").prompts.count() * len(round_.seeds)
    assert {arm: data["n"] for arm, data in report["summary"].items()} == {
        "new": n_eval,
        "previous": n_eval,
        "prompt_engineered_base": n_eval,
    }
    # Lineage: the new checkpoint comes from the curated versions, its parent from the domain one.
    chain = report["lineage"]["chain"]
    assert {v["checksum"] for v in chain[0]["dataset_versions"]} == {v.checksum for v in curated}
    assert chain[1]["checkpoint"] == domain_checkpoint.pk
    assert round_.checkpoint.parent == domain_checkpoint
    assert round_.checkpoint.metrics["text_score"] == report["summary"]["new"]["text_score"]
    # The next rounds wait in Label Studio: alignment and style on the new generations, and A/B
    # against the previous checkpoint and the prompt-engineered base.
    next_rounds = {r.name.split(" · ", 1)[1]: r for r in round_.rating_rounds()}
    assert set(next_rounds) == {
        "alignment",
        "style",
        "A/B vs previous",
        "A/B vs prompt engineered base",
    }
    assert all(r.labelstudio_project_id for r in next_rounds.values())
    assert next_rounds["style"].tasks.count() == round_.generation_batch.generations.count()
