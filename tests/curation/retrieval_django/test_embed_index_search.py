"""Embedding jobs per shard, resume and skip, a versioned index with recall, and search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from curation.models import EmbeddingShard, Image, Job, Source, VectorIndex
from curation.retrieval.search import VectorStore, text_query
from curation.selectors.search import SearchFilters, image_vectors, search_images
from curation.services import embeddings as emb
from curation.services.indexes import GENERIC_QUERIES, enqueue_build_index, recall_texts
from curation.services.jobs import enqueue_job, execute_job
from curation.services.storage import store_bytes

from .conftest import sticker_png, store_image

pytestmark = pytest.mark.django_db


def _run(job: Job) -> Job:
    execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job


def _embedded(shard_size: int = 7):
    space = emb.ensure_space("tiny-clip", name="test-space")
    emb.plan_embedding(space, shard_size)
    for job in emb.enqueue_embedding(space):
        _run(job)
    return space


def test_embed_jobs_one_per_shard_then_skip_and_grow(pool):
    space = emb.ensure_space("tiny-clip", name="test-space")
    assert emb.ensure_space("tiny-clip", name="test-space") == space
    shards = emb.plan_embedding(space, shard_size=7)
    assert [(s.index, s.status) for s in shards] == [(0, "pending"), (1, "pending"), (2, "pending")]
    assert emb.plan_embedding(space, shard_size=7) == []  # nothing new to plan

    jobs = emb.enqueue_embedding(space)
    assert len(jobs) == 3 and {j.queue for j in jobs} == {"cpu"}
    assert emb.enqueue_embedding(space) == []  # already queued: not enqueued twice
    for job in jobs:
        assert _run(job).result["skipped"] is False
    done = list(space.shards.order_by("index"))
    assert [(s.status, s.count, s.failures) for s in done] == [("done", 7, [])] * 2 + [
        ("done", 6, [])
    ]
    ids = sorted(i.pk for i in pool["all"])
    store = VectorStore.from_shards(emb.done_shard_paths(space))
    assert sorted(store.ids.tolist()) == ids
    assert np.allclose(np.linalg.norm(store.vectors, axis=1), 1.0, atol=1e-5)

    # A re-run of a finished shard's job is skipped and leaves the files alone.
    vectors_file = Path(done[0].path).with_suffix(".npy")
    before = vectors_file.stat().st_mtime_ns
    again = _run(enqueue_job("embed_shard", params={"shard_id": done[0].pk}))
    assert again.result["skipped"] is True and vectors_file.stat().st_mtime_ns == before

    # Killed after the shard was committed but before the row said so: resumes by skipping.
    EmbeddingShard.objects.filter(pk=done[1].pk).update(status="pending", count=0)
    resumed = _run(enqueue_embedding_one(space))
    assert resumed.result == {**resumed.result, "skipped": True, "count": 7}
    assert EmbeddingShard.objects.get(pk=done[1].pk).status == "done"

    # The pool grows: only the new images are planned, after the last shard; a bad file fails
    # alone with its reason.
    new = store_image(sticker_png(99), source=Source.objects.get(name="stickers"), has_alpha=True)
    broken = Image.objects.create(
        sha256="f" * 64, storage_key=store_bytes(b"not an image", "png"), has_alpha=True
    )
    [grown] = emb.plan_embedding(space, shard_size=7)
    assert grown.index == 3 and (grown.first_image_id, grown.last_image_id) == (new.pk, broken.pk)
    [job] = emb.enqueue_embedding(space)
    assert _run(job).result["failures"] == 1
    grown.refresh_from_db()
    assert grown.count == 1 and grown.failures[0]["image_id"] == broken.pk
    assert "not an image" in grown.failures[0]["reason"]


def enqueue_embedding_one(space) -> Job:
    [job] = emb.enqueue_embedding(space)
    return job


def test_space_refuses_other_weights_under_its_name(pool, tmp_path):
    from curation.retrieval.clip_models import load_clip, save_weights

    emb.ensure_space("tiny-clip", name="named")
    other = load_clip("tiny-clip", None, seed=1)
    weights = save_weights(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="choose another --space name"):
        emb.ensure_space("tiny-clip", weights, name="named")
    saved = emb.ensure_space("tiny-clip", weights)  # a saved model goes through the same path
    assert saved.weights_sha256 != emb.ensure_space("tiny-clip").weights_sha256
    with pytest.raises(ValueError, match="space name"):
        emb.ensure_space("tiny-clip", name="../escape")


def test_index_built_with_recall_and_search_by_text_exemplar_and_id(pool):
    space = _embedded()
    job = _run(enqueue_build_index(space))
    index = VectorIndex.objects.get(pk=job.result["index"])
    assert (index.version, index.index_type, index.vector_count) == (1, "Flat", 20)
    assert index.recall_at_k == pytest.approx(1.0) and index.recall_k == 20
    assert index.params["n_queries"] == 20 and Path(index.path).is_file()
    # Text-query recall is measured too (exact here: a flat index), with the generic phrasings.
    assert index.text_recall_at_k == pytest.approx(1.0)
    assert index.params["n_text_queries"] == len(recall_texts()) == len(GENERIC_QUERIES)
    assert index.built_from.count() == 3
    assert _run(enqueue_build_index(space)).result["version"] == 2

    store = VectorStore.from_shards(emb.done_shard_paths(space))
    bundle = emb.bundle_for(space)
    by_id = {int(i): v for i, v in zip(store.ids, store.vectors, strict=True)}

    hits = search_images(text="a cute sticker", k=5)
    query = text_query(bundle, ["a cute sticker"])
    exact = sorted(by_id, key=lambda i: -float(by_id[i] @ query))[:5]
    assert [image.pk for image, _ in hits] == exact
    assert [s for _, s in hits] == pytest.approx([float(by_id[i] @ query) for i in exact], abs=1e-5)

    alpha_only = search_images(text="a cute sticker", k=5, filters=SearchFilters(has_alpha=True))
    assert len(alpha_only) == 5 and all(image.has_alpha for image, _ in alpha_only)
    photos = search_images(text="a photo", k=20, filters=SearchFilters(source="photos"))
    assert {image.pk for image, _ in photos} == {i.pk for i in pool["photos"]}

    sticker = pool["stickers"][3]
    [(top, score), *_] = search_images(exemplars=[sticker], k=3)
    assert top == sticker and score == pytest.approx(1.0, abs=1e-4)

    similar = search_images(image_ids=[sticker.pk], k=4)
    assert sticker.pk not in [image.pk for image, _ in similar] and len(similar) == 4
    mine = image_vectors(space, [sticker.pk])[0]
    others = sorted((i for i in by_id if i != sticker.pk), key=lambda i: -float(by_id[i] @ mine))
    assert [image.pk for image, _ in similar] == others[:4]

    Image.objects.filter(pk=others[0]).update(status=Image.Status.QUARANTINED)
    assert others[0] not in [i.pk for i, _ in search_images(image_ids=[sticker.pk], k=4)]
    with pytest.raises(ValueError, match="needs text"):
        search_images(k=3)


def test_commands_embed_and_build_index(pool, capsys):
    import json

    call_command("embed", "--space", "cmd", "--shard-size", "8", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "space": "cmd",
        "planned_shards": 3,
        "shards_run": 3,
        "embedded": 20,
        "failures": 0,
    }
    call_command("build_index", "--space", "cmd", "--json")
    built = json.loads(capsys.readouterr().out)
    assert built["vector_count"] == 20 and built["recall_at_20"] == pytest.approx(1.0)
    assert built["text_recall_at_20"] == pytest.approx(1.0)


def test_recall_texts_put_recipe_queries_and_prompts_first(db):
    from curation.models import Prompt, PromptSet, Recipe

    Recipe.objects.create(
        name="q", text_queries=["a cute sticker", {"text": "an emoji"}], negative_queries=[]
    )
    prompts = PromptSet.objects.create(name="p")
    Prompt.objects.create(prompt_set=prompts, text="a corgi surfing")
    texts = recall_texts(limit=5)
    assert texts[:3] == ["a cute sticker", "an emoji", "a corgi surfing"] and len(texts) == 5
