"""The admin in a real browser: a data lead logs in and works with jobs; an annotator cannot."""

from __future__ import annotations

import pytest

from curation.models import Job
from tests.browser import chromium_page, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page, username: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests-only")
    page.click('input[type="submit"]')


def test_data_lead_sees_job_progress_and_cancels(live_server, data_lead):
    job = Job.objects.create(
        kind="noop", status=Job.Status.RUNNING, progress_done=3, progress_total=4
    )
    with chromium_page(live_server.url) as page:
        _login(page, data_lead.username)
        page.goto("/admin/curation/job/")
        row = page.locator("#result_list tbody tr").first
        assert "75.0%" in row.inner_text()
        screenshot(page, "admin-jobs-data-lead")
        row.locator("input.action-select").check()
        page.select_option("select[name=action]", "cancel")
        page.click("button[name=index]")
        assert "Cancellation requested for 1 job" in page.inner_text(".messagelist")
    job.refresh_from_db()
    assert job.cancel_requested


def test_annotator_cannot_use_the_admin(live_server, annotator):
    with chromium_page(live_server.url) as page:
        _login(page, annotator.username)
        assert "/admin/login/" in page.url
        # Not "wrong password": the page tells an annotator where they rate.
        content = page.content()
        assert "Annotators rate in Label Studio" in content and "/user/login/" in content
