"""The data lead opens a round report in Chromium and reads the trade-off sweep's plane.

The sweep runs for real in the small toy world (3 arms × 2 training steps, 4 prompts × 2
seeds); the screenshot lands in test-artifacts/sweep-report-plane.png.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.services.jobs import execute_job
from tests.browser import chromium_page, screenshot
from tests.training.sweeps.conftest import SWEEP_SETTINGS
from training.models import TradeoffSweep
from training.services.sweeps import start_sweep_for_round

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_data_lead_reads_the_sweep_plane_on_the_round_report(
    live_server, toy, data_lead, no_dispatch, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sweep = start_sweep_for_round(toy["round"], settings=SWEEP_SETTINGS, user=data_lead)
    execute_job(sweep.job_id)
    sweep.refresh_from_db()
    assert sweep.status == TradeoffSweep.Status.SUCCEEDED, sweep.error
    with chromium_page(live_server.url) as page:
        page.goto("/admin/login/")
        page.fill("#id_username", data_lead.username)
        page.fill("#id_password", "pw-for-tests-only")
        page.click('input[type="submit"]')
        page.wait_for_selector("#site-name")
        page.goto(reverse("round-report", args=[toy["round"].pk]))
        plane = page.locator(f"#sweep-{sweep.pk} .sweep-plane svg")
        plane.wait_for()
        box = plane.bounding_box()
        assert box and box["width"] > 400 and box["height"] > 250, box  # drawn, not collapsed
        text = plane.text_content() or ""
        for label in ("text alignment", "style similarity", "Pareto front", "sequential"):
            assert label in text, label
        rows = page.locator(f"#sweep-{sweep.pk} table.sweep-points tr[data-arm]")
        assert rows.count() == 4
        headline = page.locator(f"#sweep-{sweep.pk} table.sweep-headline tr[data-metric]")
        assert headline.all_inner_texts()[0].startswith("Visual quality (style pass rate)")
        assert page.locator(".sweep-warning").count() == 0
        page.locator(f"#sweep-{sweep.pk}").scroll_into_view_if_needed()
        path = screenshot(page, "sweep-report-plane")
        page.locator(f"#sweep-{sweep.pk}").screenshot(path=str(path.with_name("sweep-plane.png")))
    assert path.stat().st_size > 10_000
