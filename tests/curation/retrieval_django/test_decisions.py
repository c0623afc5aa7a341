"""Decisions teach the recipe: kept across runs, imported/exported as CSV, review-next order."""

from __future__ import annotations

import json
import re

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from curation.models import RecipeDecision, RecipeScore
from curation.services.recipes import ensure_heuristics_recipe, run_recipe_job, start_recipe_run

pytestmark = pytest.mark.django_db


def _run(recipe):
    return run_recipe_job(start_recipe_run(recipe, run_async=False))


def test_grid_decisions_are_kept_for_the_recipe_and_teach_its_next_run(client, data_lead, pool):
    recipe = ensure_heuristics_recipe("taught", threshold=0.5)
    first = _run(recipe)
    assert first.stats["decisions"]["decisions"] == 0
    client.force_login(data_lead)
    page = client.get(reverse("curation-review", args=[first.pk])).content.decode()
    assert "The ranking rests on 0 decisions" in page

    by_image = dict(first.scores.values_list("image_id", "pk"))
    stickers = [by_image[i.pk] for i in pool["stickers"][:3]]
    photos = [by_image[i.pk] for i in pool["photos"][:3]]
    decide = reverse("curation-review-decide", args=[first.pk])
    for ids, decision in ((stickers, "accepted"), (photos, "rejected")):
        response = client.post(
            decide, {"ids": ids, "decision": decision}, content_type="application/json"
        )
        assert response.status_code == 200
    client.post(decide, {"id": photos[2], "decision": "unreviewed"})  # taken back
    kept = dict(recipe.decisions.values_list("image_id", "decision"))
    assert len(kept) == 5 and kept[pool["stickers"][0].pk] == "accepted"
    assert RecipeDecision.objects.get(image=pool["stickers"][0]).decided_by == data_lead

    second = _run(recipe)
    report = second.stats["decisions"]
    assert (report["decisions"], report["positives"], report["negatives"]) == (5, 3, 2)
    assert report["used"] and report["folds"] == 2 and 0.0 <= report["cv_accuracy"] <= 1.0
    assert report["accuracy_without_decisions"] is not None
    lf = {row["name"]: row for row in second.stats["lf"]}
    assert lf["flat_regions"]["gold_votes"] == 5 and lf["flat_regions"]["accuracy"] == 1.0
    # The earlier decisions show in the new run's grid, so they freeze with it too.
    shown = dict(second.scores.values_list("image_id", "decision"))
    assert shown[pool["stickers"][0].pk] == "accepted" and shown[pool["photos"][0].pk] == "rejected"
    assert shown[pool["photos"][2].pk] == "unreviewed"

    page = client.get(reverse("curation-review", args=[second.pk])).content.decode()
    assert "The ranking rests on 5 decisions (3 accepted, 2 rejected)" in page
    assert "2-fold cross-validation" in page
    admin_page = client.get(reverse("admin:curation_reciperun_change", args=[second.pk]))
    assert "accuracy on decisions" in admin_page.content.decode()
    assert "The ranking rests on 5 decisions" in admin_page.content.decode()


def test_review_next_puts_the_least_certain_first_and_pages_by_keyset(
    client, data_lead, pool, monkeypatch
):
    from curation.views import review as views

    run = _run(ensure_heuristics_recipe("uncertain"))
    # Plant certainties so the order is known, with ties broken by id.
    scores = list(run.scores.order_by("pk"))
    for n, score in enumerate(scores):
        score.certainty = [0.9, 0.1, 0.5, 0.1][n % 4]
    RecipeScore.objects.bulk_update(scores, ["certainty"])
    RecipeScore.objects.filter(pk=scores[1].pk).update(decision="accepted")
    expected = [
        pk
        for pk in run.scores.filter(decision="unreviewed")
        .order_by("certainty", "pk")
        .values_list("pk", flat=True)
    ]
    monkeypatch.setattr(views, "PAGE_SIZE", 4)
    client.force_login(data_lead)
    url = reverse("curation-review", args=[run.pk])
    first = client.get(url, {"order": "uncertain", "decision": "unreviewed"})
    ids = [int(i) for i in re.findall(r'class="tile"[^>]*data-id="(\d+)"', first.content.decode())]
    assert ids == expected[:4] and scores[1].pk not in ids
    certainties = dict(run.scores.values_list("pk", "certainty"))
    assert [certainties[i] for i in ids] == sorted(certainties[i] for i in ids)
    second = client.get(first.context["next_url"])
    assert "order=uncertain" in first.context["next_url"]
    assert second.context["tiles"][0]["score"].pk == expected[4]
    back = client.get(second.context["prev_url"])
    assert [t["score"].pk for t in back.context["tiles"]] == expected[:4]
    assert 'id="review-next"' in client.get(url).content.decode()
    bad = client.get(url, {"order": "random"})
    assert "order: &#x27;random&#x27; is not ranked or uncertain" in bad.content.decode()


def test_real_run_certainty_is_what_review_next_sorts_on(pool):
    run = _run(ensure_heuristics_recipe("certainty"))
    for score in run.scores.all():
        assert score.certainty == pytest.approx(abs(2 * score.probability - 1), abs=1e-9)


def test_review_decisions_command_imports_reports_and_exports(pool, tmp_path, capsys):
    recipe = ensure_heuristics_recipe()
    run = _run(recipe)
    sticker, photo = pool["stickers"][0], pool["photos"][0]
    csv = tmp_path / "decisions.csv"
    csv.write_text(
        "sha256,decision\n"
        f"{sticker.sha256},accept\n"
        f"{'0' * 64},accept\n"
        f"{photo.sha256.upper()},reject\n"
        f"{pool['photos'][1].sha256},maybe\n"
        "just-one-column\n"
        f"{pool['stickers'][1].sha256},Accept\n"
    )
    call_command("review_decisions", "heuristics", str(csv))
    captured = capsys.readouterr()
    assert "recorded 2 accepted and 1 rejected decisions (3 shown in the latest run's grid)" in (
        captured.out
    )
    assert "3 row(s) skipped" in captured.out
    assert f"line 3: no image with sha256 '{'0' * 64}'" in captured.err
    assert "line 5: decision 'maybe' is not accept or reject" in captured.err
    assert "line 6: expected 2 columns" in captured.err
    decisions = dict(recipe.decisions.values_list("image_id", "decision"))
    assert decisions == {
        sticker.pk: "accepted",
        photo.pk: "rejected",
        pool["stickers"][1].pk: "accepted",
    }
    assert recipe.decisions.get(image=photo).origin == "import"
    assert run.scores.get(image=sticker).decision == "accepted"

    out = tmp_path / "out.csv"
    call_command("review_decisions", "heuristics", str(out), "--export")
    lines = out.read_text().splitlines()
    assert lines[0] == "sha256,decision" and len(lines) == 4
    assert f"{photo.sha256},reject" in lines and f"{sticker.sha256},accept" in lines
    # Round trip: the export imports back to the same decisions.
    call_command("review_decisions", "heuristics", str(out))
    assert dict(recipe.decisions.values_list("image_id", "decision")) == decisions

    # run_recipe --json uses every recorded decision.
    capsys.readouterr()
    call_command("run_recipe", "heuristics", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 20
    latest = recipe.runs.order_by("-id").first()
    assert latest.stats["decisions"]["decisions"] == 3

    missing = tmp_path / "missing.csv"
    with pytest.raises(CommandError, match="missing.csv: cannot read"):
        call_command("review_decisions", "heuristics", str(missing))
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text(f"{'1' * 64},accept\n")
    with pytest.raises(CommandError, match="no row could be recorded"):
        call_command("review_decisions", "heuristics", str(only_bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("sha256,decision\n")
    with pytest.raises(CommandError, match="no decision rows found"):
        call_command("review_decisions", "heuristics", str(empty))
    with pytest.raises(CommandError, match="no recipe named 'nope'"):
        call_command("review_decisions", "nope", str(csv))
