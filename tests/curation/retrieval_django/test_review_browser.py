"""A data lead in a real browser: opens the grid, accepts two images by clicking, freezes."""

from __future__ import annotations

import pytest

from curation.models import DatasetVersion
from curation.services.recipes import ensure_heuristics_recipe, run_recipe_job, start_recipe_run
from tests.browser import chromium_page, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_data_lead_accepts_two_by_clicking_and_freezes(live_server, data_lead, pool):
    run = run_recipe_job(start_recipe_run(ensure_heuristics_recipe("browser"), run_async=False))
    ranked = list(run.scores.order_by("-score", "pk").values_list("pk", "image_id"))
    with chromium_page(live_server.url) as page:
        page.goto("/admin/login/")
        page.fill("#id_username", data_lead.username)
        page.fill("#id_password", "pw-for-tests-only")
        page.click('input[type="submit"]')
        page.goto(f"/admin/curation/reciperun/{run.pk}/change/")
        page.click("a.review-link")
        assert page.locator(".tile").count() == 20
        # Thumbnails load through signed URLs (naturalWidth is 0 for a broken image).
        page.wait_for_function(
            "Array.from(document.querySelectorAll('.tile img')).every(i => i.complete"
            " && i.naturalWidth > 0)"
        )
        for score_id, _ in ranked[:2]:
            tile = page.locator(f'.tile[data-id="{score_id}"]')
            tile.locator("button.accept").click()
            page.wait_for_selector(f'.tile[data-id="{score_id}"][data-decision="accepted"]')
        # Keyboard: focus the third tile and press R to reject it.
        page.locator(f'.tile[data-id="{ranked[2][0]}"]').focus()
        page.keyboard.press("r")
        page.wait_for_selector(f'.tile[data-id="{ranked[2][0]}"][data-decision="rejected"]')
        assert page.inner_text("#accepted-count") == "2"
        screenshot(page, "review-grid-data-lead")

        page.fill("#freeze-form input[name=dataset_name]", "browser-domain")
        page.fill("#freeze-form textarea[name=reason]", "two clicked in the grid")
        page.click("#freeze-form input[type=submit]")
        page.wait_for_url("**/admin/curation/datasetversion/*/change/")
        assert "Froze browser-domain v1 (2 rows" in page.inner_text(".messagelist")
        screenshot(page, "review-grid-frozen-version")

    version = DatasetVersion.objects.get(dataset__name="browser-domain")
    assert version.is_frozen and version.row_count == 2 and version.frozen_by == data_lead
    assert set(version.items.values_list("image_id", flat=True)) == {i for _, i in ranked[:2]}
    assert version.lineage["recipe_run"] == run.pk
    assert run.scores.get(pk=ranked[2][0]).decision == "rejected"
