"""The ingest pages in a real browser: refusals on the batch, transparent thumbnails rendered."""

from __future__ import annotations

import pytest

from curation.services.ingest import run_ingest
from tests.browser import chromium_page, screenshot
from tests.curation.ingest_django.conftest import POOL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_batch_page_and_checkerboard_thumbnails(live_server, data_lead):
    batch = run_ingest([POOL], "pool", user=data_lead)
    with chromium_page(live_server.url) as page:
        page.goto("/admin/login/")
        page.fill("#id_username", data_lead.username)
        page.fill("#id_password", "pw-for-tests-only")
        page.click('input[type="submit"]')
        page.goto(f"/admin/curation/ingestbatch/{batch.pk}/change/")
        table = page.locator("table.refusals").inner_text()
        assert "broken.jpg" in table and "truncated JPEG" in table
        screenshot(page, "admin-ingest-batch")
        page.goto("/admin/curation/image/?has_alpha__exact=1&status__exact=ok")
        thumbs = page.locator("#result_list img[loading=lazy]")  # not the boolean icons
        assert thumbs.count() == 15
        # Every thumbnail actually loads through its signed URL (a broken image has no width).
        # They are lazy: make them eager and wait for each decode, or ones below the fold race.
        widths = thumbs.evaluate_all(
            "imgs => Promise.all(imgs.map(i => { i.loading = 'eager';"
            " return i.decode().then(() => i.naturalWidth, () => 0); }))"
        )
        assert all(w > 0 for w in widths), widths
        screenshot(page, "admin-images-rgba")
