"""What keeps the review grid and its freeze flat at a million images, checked on a small pool:
the keyset page seeks its index, and freezing writes rows a batch at a time, in one pass."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from curation.models import Dataset, DatasetVersion, Image, Recipe, RecipeScore
from curation.retrieval import clip_models
from curation.selectors.search import image_vectors_by_id
from curation.services import embeddings as emb
from curation.services.indexes import build_vector_index
from curation.services.recipes import ensure_heuristics_recipe, run_recipe_job, start_recipe_run
from curation.services.review import freeze_domain_version
from curation.services.versions import (
    VersionUnchanged,
    add_items,
    build_manifest,
    create_draft_version,
    freeze_version,
)

pytestmark = pytest.mark.django_db
TEXTS = ["a flat sticker on transparency", "a noisy photograph"]


def _explain(sql: str) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        # A 20-row table is scanned or sorted whatever its indexes: take those choices away, so
        # the plan shows whether the order's index can seek to the cursor or only walk the run.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def _page_queries(client, run, **params) -> tuple[list, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("curation-review", args=[run.pk]), params)
    assert response.status_code == 200, response.content[:500]
    sql = [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].startswith('SELECT "curation_recipescore"')
    ]
    return response.context["tiles"], sql


@pytest.mark.parametrize(
    ("order", "index", "direction"),
    [("ranked", "score_rank", "<"), ("uncertain", "score_review_next", ">")],
)
@pytest.mark.parametrize("cursor_param", ["after", "before"])
def test_a_deep_page_seeks_the_index_instead_of_walking_the_run(
    client, pool, data_lead, order, index, direction, cursor_param
):
    run = run_recipe_job(start_recipe_run(ensure_heuristics_recipe(), run_async=False))
    field = "score" if order == "ranked" else "certainty"
    key = f"-{field}" if order == "ranked" else field
    middle = run.scores.order_by(key, "pk")[10]
    client.force_login(data_lead)
    tiles, queries = _page_queries(
        client, run, order=order, **{cursor_param: f"{getattr(middle, field)!r}_{middle.pk}"}
    )
    assert tiles
    # The cursor's tie group, then (the page not being full) the values past it: two seeks.
    tie_sql, past_sql = queries
    tie_plan, past_plan = _explain(tie_sql), _explain(past_sql)
    if cursor_param == "before":
        direction = ">" if direction == "<" else "<"
    id_direction = ">" if cursor_param == "after" else "<"
    if connection.vendor == "sqlite":
        # `(run_id=? AND score<?)`: a range seek; `(run_id=?)` alone walks the run from the top.
        assert f"USING INDEX {index} (run_id=? AND {field}=? AND id{id_direction}?)" in tie_plan
        assert f"USING INDEX {index} (run_id=? AND {field}{direction}?)" in past_plan, past_plan
    else:
        # On 20 rows PostgreSQL may seek the primary key to `id > pk` and filter the rest
        # instead of seeking (run, score, id): either way it seeks, it never walks the run.
        assert (
            f"({field} = " in tie_plan and "Index Cond: ((run_id = " in tie_plan
        ) or f"Index Cond: (id {id_direction} {middle.pk})" in tie_plan, tie_plan
        assert f"Index Cond: ((run_id = {run.pk}) AND ({field} {direction} " in past_plan, past_plan


def test_pages_walk_a_run_whose_scores_all_tie_forward_and_back_without_loss(
    client, pool, data_lead, monkeypatch
):
    """A label model scores by vote pattern, so whole groups of images share one score: paging
    through ties seeks by id inside the group and shows every image exactly once, in order."""
    from curation.views import review

    monkeypatch.setattr(review, "PAGE_SIZE", 3)
    run = run_recipe_job(start_recipe_run(ensure_heuristics_recipe(), run_async=False))
    # Two tie groups of 10 (the stickers and the photos), as a two-pattern vote would give.
    stickers = {i.pk for i in pool["stickers"]}
    for score in run.scores.all():
        RecipeScore.objects.filter(pk=score.pk).update(
            score=0.75 if score.image_id in stickers else 0.25
        )
    expected = list(run.scores.order_by("-score", "pk").values_list("pk", flat=True))
    client.force_login(data_lead)

    seen, pages, params = [], [], {}
    while True:
        tiles, _ = _page_queries(client, run, **params)
        pages.append([t["score"].pk for t in tiles])
        seen += pages[-1]
        last = tiles[-1]["score"]
        if len(seen) >= len(expected):
            break
        params = {"after": f"{last.score!r}_{last.pk}"}
    assert seen == expected  # every image once, across the boundary between the two groups
    assert len(pages) == 7 and [len(p) for p in pages] == [3] * 6 + [2]

    back = []
    first = run.scores.get(pk=pages[-1][0])
    params = {"before": f"{first.score!r}_{first.pk}"}
    for _ in range(6):
        tiles, _ = _page_queries(client, run, **params)
        back = [t["score"].pk for t in tiles] + back
        params = {"before": f"{tiles[0]['score'].score!r}_{tiles[0]['score'].pk}"}
    assert back == expected[:18]


@pytest.fixture
def captioned_run(pool):
    space = emb.ensure_space("tiny-clip", name="review-scale")
    emb.plan_embedding(space, 10)
    for shard in emb.pending_shards(space):
        emb.run_embed_shard(shard)
    index = build_vector_index(space)
    recipe = Recipe.objects.create(
        name="captions", text_queries=TEXTS, labelling_functions=[], top_k=20
    )
    run = run_recipe_job(start_recipe_run(recipe, run_async=False))
    assert run.index == index and run.scores.count() == 20
    return run


def _freeze(run, name: str, caption: str = "fallback") -> tuple[DatasetVersion, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        version = freeze_domain_version(
            run, dataset_name=name, reason="test", default_caption=caption
        )
    return version, [q["sql"] for q in ctx.captured_queries]


def test_freeze_captions_each_image_by_its_closest_text_query_in_a_few_statements(
    captioned_run, pool, monkeypatch
):
    run = captioned_run
    space = run.index.space
    vectors = image_vectors_by_id(space, [i.pk for i in pool["all"]])
    # A random tiny CLIP may put every image nearest one text: make each text one image's own
    # vector, so both texts are some image's closest and the matching is what is tested.
    sticker, photo = pool["stickers"][3], pool["photos"][3]
    text_vectors = np.stack([vectors[sticker.pk], vectors[photo.pk]])
    monkeypatch.setattr(clip_models, "encode_texts", lambda bundle, texts: text_vectors)
    own = pool["stickers"][0]
    Image.objects.filter(pk=own.pk).update(caption="its own caption")
    some = {own.pk, sticker.pk, photo.pk, pool["photos"][0].pk}
    run.scores.filter(image_id__in=some).update(decision="accepted")
    version, queries = _freeze(run, "small")
    assert version.row_count == 4

    RecipeScore.objects.filter(run=run).update(decision="accepted")
    bigger, more_queries = _freeze(run, "big")
    assert bigger.row_count == 20
    # The same statements for 20 rows as for 6: no query, object or batch per image.
    assert len(more_queries) == len(queries), more_queries
    _one_pass(more_queries)

    expected = {i: TEXTS[int(np.argmax(v @ text_vectors.T))] for i, v in vectors.items()}
    expected[own.pk] = "its own caption"
    captions = dict(bigger.items.values_list("image_id", "caption"))
    assert captions == expected
    assert captions[sticker.pk] == TEXTS[0] and captions[photo.pk] == TEXTS[1]


def test_a_second_freeze_keeps_the_parents_rows_and_diffs_in_sql(captioned_run, pool):
    run = captioned_run
    ranked = list(run.scores.order_by("-score", "pk"))
    RecipeScore.objects.filter(pk__in=[s.pk for s in ranked[:5]]).update(decision="accepted")
    first, _ = _freeze(run, "domain")
    before = dict(first.items.values_list("image_id", "caption"))

    RecipeScore.objects.filter(pk__in=[s.pk for s in ranked[5:8]]).update(decision="accepted")
    Image.objects.filter(pk=ranked[0].image_id).update(caption="renamed since")
    second, queries = _freeze(run, "domain")
    assert second.parent == first and second.row_count == 8
    captions = dict(second.items.values_list("image_id", "caption"))
    assert {i: captions[i] for i in before} == before  # the parent's rows, not re-captioned
    added = {s.image.sha256 for s in ranked[5:8]}
    assert second.diff["added"] == 3 and set(second.diff["added_sha256"]) == added
    assert second.diff["removed"] == 0 and second.diff["removed_sha256"] == []
    _one_pass(queries)  # the parent's rows and the new ones, read together
    # The draft was never read back to write the manifest: the rows in the database make the
    # same bytes, and a copy of the version frozen the other way is refused as identical.
    assert build_manifest(second) == default_storage.open(second.manifest_path).read()
    copy = create_draft_version(second.dataset, parent=second, reason="copy")
    with pytest.raises(VersionUnchanged):
        freeze_version(copy)
    with pytest.raises(VersionUnchanged):  # nothing newly accepted: the grid refuses it too
        _freeze(run, "domain")


def _one_pass(queries: list[str]) -> None:
    """The rows are read once, by one sorted SELECT over all sources, and reach the draft with
    no statement per row: on SQLite one `INSERT … SELECT` of the same sources, on PostgreSQL a
    COPY of each batch read, which no query log sees."""
    # PostgreSQL logs the server-side cursor's `DECLARE … CURSOR FOR SELECT …`.
    reads = [q for q in queries if q.split(" FOR ")[-1].startswith("SELECT * FROM (")]
    assert len(reads) == 1 and reads[0].endswith(" ORDER BY 2"), reads
    writes = [q for q in queries if 'INTO "curation_datasetitem"' in q]
    if connection.vendor == "sqlite":
        assert len(writes) == 1 and " SELECT " in writes[0], writes
    else:
        assert not writes, writes


def test_parent_rows_keep_their_exact_caption_and_weight(pool):
    """The parent's rows travel through Arrow and back into the database (PostgreSQL: CSV into
    COPY): quotes, commas, new lines and a weight that is not a float32 come back unchanged."""
    dataset = Dataset.objects.create(name="domain", kind=Dataset.Kind.DOMAIN)
    first = create_draft_version(dataset, reason="by hand")
    odd = 'a "quoted", comma\nnew line\r\n🙂 \\N'
    add_items(first, [{"image": pool["photos"][0], "caption": odd, "weight": 0.1234567891234}])
    add_items(first, [{"image": pool["photos"][1], "caption": "", "label": "", "weight": 2.5}])
    first = freeze_version(first, reason="by hand")
    recipe = Recipe.objects.create(name="plain", labelling_functions=[], top_k=20)
    run = run_recipe_job(start_recipe_run(recipe, run_async=False))
    run.scores.filter(image=pool["stickers"][0]).update(decision="accepted")
    second, _ = _freeze(run, "domain", caption="")
    rows = {
        i: (c, lab, w)
        for i, c, lab, w in second.items.values_list("image_id", "caption", "label", "weight")
    }
    assert rows[pool["photos"][0].pk] == (odd, "", 0.1234567891234)
    assert rows[pool["photos"][1].pk] == ("", "", 2.5)
    assert rows[pool["stickers"][0].pk] == ("", "sticker", 1.0)
    assert second.row_count == 3 and second.diff["added"] == 1
    assert build_manifest(second) == default_storage.open(second.manifest_path).read()
