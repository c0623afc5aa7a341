"""Recipes end to end: heuristics without CLIP, and retrieval on a tiny embedded pool."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from curation.weak.features import extract_features
from curation.weak.labelling_functions import ExemplarSimilarity, FlatRegions
from curation.weak.recipe import RecipeSpec, WeightedQuery, heuristics_recipe, run_recipe
from tests.curation.weak.synthetic import labelled_pool, photo


def test_heuristics_recipe_ranks_stickers_first_without_clip() -> None:
    images, labels = labelled_pool(20, 40, seed=7)
    features = {1000 + i: extract_features(im) for i, im in enumerate(images)}
    truth = {1000 + i: int(y) for i, y in enumerate(labels)}
    result = run_recipe(
        heuristics_recipe(), features, gold={k: v for k, v in list(truth.items())[::3]}
    )
    top = [truth[int(i)] for i in result.image_ids[:20]]
    assert sum(top) == 20  # precision@20 = 1.0
    assert (
        (result.weak_labels == 1) == np.array([truth[int(i)] == 1 for i in result.image_ids])
    ).all()
    assert (np.diff(result.scores) <= 0).all()
    stats = {s.name: s for s in result.lf_stats}
    assert stats["flat_regions"].coverage > 0.95 and stats["flat_regions"].accuracy == 1.0
    row = next(result.rows())
    assert set(row) == {"image_id", "score", "weak_label", "probability", "similarity", "lf_votes"}
    assert row["similarity"] is None and row["lf_votes"]["flat_regions"] == 1


def test_recipe_spec_json_round_trip() -> None:
    spec = RecipeSpec(
        name="cats",
        text_queries=[WeightedQuery("a sticker of a cat", 2.0)],
        negative_queries=[WeightedQuery("a photo")],
        exemplar_ids=[3, 4],
        lfs=[FlatRegions(positive_above=0.7), ExemplarSimilarity(positive_above=0.9)],
        top_k=50,
    )
    assert RecipeSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(ValueError, match="colour"):
        RecipeSpec.from_json({"name": "x", "colour": "red"})


def _planted_pool() -> tuple[dict[int, Image.Image], set[int]]:
    """12 images of one motif (the planted cluster) hidden among 36 photo-like ones."""
    rng = np.random.default_rng(11)
    images, cluster = {}, set()
    for i in range(48):
        if i % 4 == 0:
            image = Image.new("RGB", (64, 64), (255, 255, 255))
            r = int(rng.integers(18, 26))
            ImageDraw.Draw(image).ellipse(
                [32 - r, 32 - r, 32 + r, 32 + r], fill=(220, 30, 40), outline=(0, 0, 0), width=3
            )
            cluster.add(i)
        else:
            image = photo(rng)
        images[i] = image
    return images, cluster


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    import curation.retrieval  # noqa: F401
    from curation.retrieval.clip_models import TINY_CLIP, load_clip
    from curation.retrieval.embedding import embed_shard, plan_shards
    from curation.retrieval.index import build_index
    from curation.retrieval.search import VectorStore

    folder = tmp_path_factory.mktemp("emb")
    images, cluster = _planted_pool()
    bundle = load_clip(TINY_CLIP, None, seed=0)
    for spec in plan_shards(images, 16):
        embed_shard(spec, bundle, images.__getitem__, folder)
    store = VectorStore.from_shards([folder])
    index = build_index([folder], folder / "index.faiss", k=10, n_queries=20)
    features = {i: extract_features(im) for i, im in images.items()}
    return store, index, features, cluster, bundle


def test_exemplar_recipe_finds_the_planted_cluster(embedded) -> None:
    store, index, features, cluster, _ = embedded
    exemplars = sorted(cluster)[:3]
    spec = RecipeSpec(name="red circles", exemplar_ids=exemplars, lfs=[FlatRegions()], top_k=12)
    for kwargs in ({"vectors": store}, {"vectors": store, "index": index}):
        result = run_recipe(spec, features, **kwargs)
        assert set(result.image_ids.tolist()) == cluster
        assert (result.weak_labels == 1).all()
    by_similarity = run_recipe(
        RecipeSpec(name="sim", exemplar_ids=exemplars), features, vectors=store
    )
    assert set(by_similarity.image_ids[:12].tolist()) == cluster and len(by_similarity) == 48


def test_text_and_negative_queries_use_given_or_encoded_vectors(embedded) -> None:
    store, _, features, cluster, bundle = embedded
    centre = store.get(sorted(cluster)).mean(axis=0)
    others = store.get([i for i in store.ids.tolist() if i not in cluster]).mean(axis=0)
    spec = RecipeSpec(
        name="text",
        text_queries=[WeightedQuery("red circle sticker")],
        negative_queries=[WeightedQuery("a photo", 0.3)],
        top_k=12,
    )
    vectors = {
        "red circle sticker": centre / np.linalg.norm(centre),
        "a photo": others / np.linalg.norm(others),
    }
    result = run_recipe(spec, features, vectors=store, text_vectors=vectors)
    assert set(result.image_ids.tolist()) == cluster
    encoded = run_recipe(spec, features, vectors=store, bundle=bundle)  # random model: runs, ranks
    assert len(encoded) == 12 and np.isfinite(encoded.scores).all()
    with pytest.raises(ValueError, match="CLIP encoder"):
        run_recipe(spec, features, vectors=store)
    with pytest.raises(ValueError, match="embedded vectors"):
        run_recipe(spec, features)
