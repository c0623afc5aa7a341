"""Recipe runs as jobs: scores, weak labels, LF stats, the feature cache, validation, command."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from curation.models import Job, Recipe, RecipeScore
from curation.models.recipes import ImageFeatures
from curation.services import embeddings as emb
from curation.services.indexes import build_vector_index
from curation.services.jobs import execute_job
from curation.services.recipes import (
    FEATURES_VERSION,
    ensure_heuristics_recipe,
    run_recipe_job,
    start_recipe_run,
)

pytestmark = pytest.mark.django_db


def _run_job(run):
    execute_job(run.job_id)
    run.refresh_from_db()
    job = Job.objects.get(pk=run.job_id)
    assert job.status == Job.Status.SUCCEEDED, job.error
    return run


def test_heuristics_recipe_job_ranks_stickers_first_and_caches_features(pool):
    recipe = ensure_heuristics_recipe("stickers", threshold=0.5)
    run = start_recipe_run(recipe)
    assert run.job.kind == "recipe_run" and run.job.queue == "cpu"
    assert run.index is None and run.stats == {"status": "queued"}
    run = _run_job(run)

    scores = list(RecipeScore.objects.filter(run=run).select_related("image"))
    assert len(scores) == 20 and run.stats["candidates"] == 20
    top = sorted(scores, key=lambda s: (-s.score, s.image_id))[:10]
    assert all(s.image.has_alpha for s in top), "top-ranked half should be the stickers"
    for s in scores:
        assert 0.0 <= s.probability <= 1.0 and s.weak_label in (0, 1)
        assert set(s.lf_votes) == {lf["name"] for lf in recipe.labelling_functions}
    assert sum(s.weak_label == 1 for s in scores) == run.stats["weak_positive"]
    assert run.stats["weak_positive"] == 10
    lf = {row["name"]: row for row in run.stats["lf"]}
    assert lf["has_alpha"]["coverage"] == pytest.approx(0.5)  # abstains on opaque photos
    assert lf["has_alpha"]["positive_votes"] == 10
    assert all(0.0 <= row["conflict"] <= row["overlap"] <= row["coverage"] for row in lf.values())

    cached = ImageFeatures.objects.filter(version=FEATURES_VERSION)
    assert cached.count() == 20
    computed = dict(cached.values_list("image_id", "computed_at"))
    again = run_recipe_job(start_recipe_run(recipe, run_async=False))
    assert dict(cached.values_list("image_id", "computed_at")) == computed  # not re-measured
    assert [s.image_id for s in again.scores.order_by("-score", "image_id")] == [
        s.image_id for s in sorted(scores, key=lambda s: (-s.score, s.image_id))
    ]


def test_query_recipe_with_index_measures_only_its_candidates(pool):
    space = emb.ensure_space("tiny-clip", name="recipes")
    emb.plan_embedding(space, 10)
    for shard in emb.pending_shards(space):
        emb.run_embed_shard(shard)
    index = build_vector_index(space)
    recipe = Recipe.objects.create(
        name="query",
        text_queries=[{"text": "a cute sticker", "weight": 1.0}, "an emoji"],
        negative_queries=[{"text": "a photo"}],
        labelling_functions=ensure_heuristics_recipe().labelling_functions,
        top_k=6,
    )
    recipe.exemplars.add(pool["stickers"][0])
    run = _run_job(start_recipe_run(recipe))
    assert run.index == index and run.config["space"] == "recipes"
    assert run.config["exemplar_ids"] == [pool["stickers"][0].pk]
    assert run.scores.count() == 6
    assert ImageFeatures.objects.count() == 6  # only the index's top-k were measured


def test_bad_image_abstains_and_the_run_goes_on(pool):
    from curation.models import Image
    from curation.services.storage import store_bytes

    broken = Image.objects.create(sha256="e" * 64, storage_key=store_bytes(b"junk", "png"))
    run = _run_job(start_recipe_run(ensure_heuristics_recipe()))
    score = run.scores.get(image=broken)
    assert set(score.lf_votes.values()) == {-1} and score.weak_label == -1
    assert "UnidentifiedImageError" in ImageFeatures.objects.get(image=broken).error


def test_recipe_validation_names_the_field():
    recipe = Recipe(
        name="bad",
        text_queries=[{"txt": "typo"}],
        labelling_functions=[{"kind": "no_such_lf"}],
        threshold=1.5,
    )
    with pytest.raises(ValidationError) as caught:
        recipe.full_clean()
    errors = caught.value.message_dict
    assert "unknown key(s) ['txt']" in errors["text_queries"][0]
    assert "'no_such_lf'" in errors["labelling_functions"][0]
    assert "threshold" in errors
    with pytest.raises(ValueError, match="needs vectors|build_index"):
        start_recipe_run(Recipe.objects.create(name="q", text_queries=["a sticker"]))


def test_admin_recipe_form_shows_field_errors_and_run_links_to_grid(client, data_lead, pool):
    client.force_login(data_lead)
    response = client.post(
        reverse("admin:curation_recipe_add"),
        {
            "name": "from-admin",
            "text_queries": "[]",
            "negative_queries": "[]",
            "labelling_functions": json.dumps([{"kind": "uniform_border", "bogus": 1}]),
            "threshold": "0.5",
            "top_k": "100",
        },
    )
    assert response.status_code == 200
    assert "unknown field(s) [&#x27;bogus&#x27;]" in response.content.decode()
    assert not Recipe.objects.filter(name="from-admin").exists()

    run = run_recipe_job(start_recipe_run(ensure_heuristics_recipe(), run_async=False))
    page = client.get(reverse("admin:curation_reciperun_change", args=[run.pk])).content.decode()
    assert reverse("curation-review", args=[run.pk]) in page
    assert "has_alpha" in page  # the LF coverage table


def test_run_recipe_command_json_sorted_by_score(pool, capsys):
    call_command("run_recipe", "heuristics", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 20 and set(rows[0]) == {"sha256", "path", "score", "label"}
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    stickers = {i.sha256 for i in pool["stickers"]}
    assert {r["sha256"] for r in rows[:10]} == stickers
