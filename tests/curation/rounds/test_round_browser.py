"""An annotator rates a pushed generation in Label Studio's own page in chromium; the platform
receives the annotation, and the image on that page came from the platform's signed URL."""

from __future__ import annotations

import secrets

import pytest

from curation.models import Annotation, Job
from curation.services.annotators import issue_password, sync_annotators
from curation.services.jobs import execute_job, load_handlers
from curation.services.rounds import create_round, push_round
from tests.browser import chromium_page, screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.labelstudio,
    pytest.mark.django_db(transaction=True),
]


def test_annotator_rates_in_label_studio_and_the_platform_receives_it(
    settings, live_server, ls_server, make_batch, make_annotators
):
    settings.LABEL_STUDIO_URL = ls_server.url  # also the media view's CORS origin
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.LABEL_STUDIO_ADMIN_EMAIL = ls_server.username
    settings.LABEL_STUDIO_ADMIN_PASSWORD = ls_server.password
    settings.LABEL_STUDIO_WEBHOOK_SECRET = secrets.token_urlsafe(16)
    settings.PLATFORM_PUBLIC_URL = live_server.url
    # A running web process has imported every job module long before; the first import (torch)
    # takes seconds, longer than Label Studio's 1 s webhook timeout.
    load_handlers()
    batch = make_batch("browser", ["a smiling avocado"])
    round_ = create_round(name="browser", kind="alignment", generation_batch=batch, gold_rate=0)
    (user,) = make_annotators(1)
    sync_annotators()
    push_round(round_)
    round_.refresh_from_db()
    task = round_.tasks.get()
    issued = issue_password(user)
    email, password = issued.email, issued.password

    with chromium_page(ls_server.url) as page:
        page.goto("/user/login/")
        page.fill('input[name="email"]', email)
        page.fill('input[name="password"]', password)
        page.click('button[type="submit"]')
        page.wait_for_url(lambda url: "/user/login" not in url)
        page.goto(f"/projects/{round_.labelstudio_project_id}/data?task={task.labelstudio_task_id}")
        page.get_by_text("sticker of a smiling avocado").first.wait_for()
        # The generation rendered: loaded by the browser from the platform, cross-origin.
        page.wait_for_function(
            """base => [...document.images].some(
                   img => img.src.startsWith(base) && img.complete && img.naturalWidth > 0)""",
            arg=live_server.url,
        )
        page.click('text="yes"')
        page.locator(".ant-rate-star").nth(3).click()
        screenshot(page, "labelstudio-annotator-rating")
        with page.expect_response(
            lambda r: "/annotations" in r.url and r.request.method == "POST"
        ) as posted:
            page.click('button:has-text("Submit")')
        assert posted.value.status == 201

    # Label Studio posted the webhook before answering the browser: the event is stored.
    (job,) = Job.objects.filter(kind="labelstudio.webhook", status=Job.Status.QUEUED)
    execute_job(job.pk)
    annotation = Annotation.objects.get(task=task)
    assert annotation.aligned is True and annotation.rating == 4
    assert annotation.annotator == user and annotation.annotator_email == email
