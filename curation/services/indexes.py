"""Versioned FAISS indexes of an embedding space, built from its finished shards.

The index type is chosen by size (`curation.retrieval.index.choose_index_spec`) and its
recall@k against exact search is measured at build time, twice: with held-out image vectors
and with text-query embeddings (recipe queries, prompts and a fixed set of generic phrasings,
encoded by the space's own model), since text→image search is what search and recipes do and
CLIP's modality gap makes it the harder case. Both are stored on the VectorIndex row the admin
shows. Files live in `<INDEXES_ROOT>/<space name>/v<N>.faiss` (+ `.json`).
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from curation.models import EmbeddingShard, EmbeddingSpace, Job, VectorIndex
from curation.services.embeddings import done_shard_paths
from curation.services.jobs import enqueue_job

RECALL_K = 100
RECALL_QUERIES = 1000
RECALL_TEXTS = 200
_SUBJECTS = (
    "cat", "dog", "robot", "flower", "heart", "star", "pizza", "rocket", "tree", "car",
    "house", "bird",
)  # fmt: skip
_STYLES = (
    "a sticker of a {}", "a photo of a {}", "an emoji of a {}", "a drawing of a {}",
    "an icon of a {}", "a cartoon {}", "a {} on a white background", "a close-up of a {}",
)  # fmt: skip
GENERIC_QUERIES = tuple(style.format(subject) for style in _STYLES for subject in _SUBJECTS)
_loaded: dict[str, Any] = {}
_loaded_lock = threading.Lock()


def indexes_root() -> Path:
    return Path(getattr(settings, "INDEXES_ROOT", None) or Path(settings.VAR_DIR) / "indexes")


def recall_texts(limit: int = RECALL_TEXTS) -> list[str]:
    """Texts whose embeddings measure text→image recall: what users actually search for first
    (recipe queries, then prompts), topped up with generic phrasings, at most `limit`."""
    from curation.models import Prompt, Recipe

    texts: list[str] = []
    for queries in Recipe.objects.values_list("text_queries", "negative_queries"):
        for group in queries:
            texts += [q if isinstance(q, str) else str(q.get("text", "")) for q in group or []]
    texts += list(Prompt.objects.order_by("id").values_list("text", flat=True)[:limit])
    texts += GENERIC_QUERIES
    unique = [t for t in dict.fromkeys(t.strip() for t in texts) if t]
    return unique[:limit]


def build_vector_index(
    space: EmbeddingSpace,
    *,
    spec: str | None = None,
    memory_budget: int | None = None,
    target_recall: float = 0.95,
) -> VectorIndex:
    """Build the next index version of `space` from all its finished shards."""
    from curation.retrieval.index import build_index, params_path_for

    shards = list(space.shards.filter(status=EmbeddingShard.Status.DONE).order_by("index"))
    if not shards:
        raise ValueError(f"space {space.name!r} has no finished shards; run `embed` first")
    folder = indexes_root() / space.name
    folder.mkdir(parents=True, exist_ok=True)
    building = folder / f"building-{uuid.uuid4().hex[:8]}.faiss"
    from curation.retrieval.clip_models import encode_texts
    from curation.services.embeddings import bundle_for

    text_queries = encode_texts(bundle_for(space), recall_texts())
    built = build_index(
        done_shard_paths(space),
        building,
        spec,
        k=RECALL_K,
        n_queries=RECALL_QUERIES,
        target_recall=target_recall,
        memory_budget=memory_budget,
        text_queries=text_queries,
    )
    with transaction.atomic():
        # The version number is taken under a lock on the space, after the slow build.
        EmbeddingSpace.objects.select_for_update().filter(pk=space.pk).first()
        version = (space.indexes.aggregate(n=Max("version"))["n"] or 0) + 1
        final = folder / f"v{version}.faiss"
        os.replace(params_path_for(building), params_path_for(final))
        os.replace(building, final)
        params = built.params
        index = VectorIndex.objects.create(
            space=space,
            version=version,
            index_type=params.spec,
            params=params.to_json(),
            path=str(final),
            vector_count=params.n_vectors,
            recall_at_k=params.recall_at_k,
            text_recall_at_k=params.text_recall_at_k,
            recall_k=params.k,
        )
        index.built_from.set(shards)
    return index


def latest_index(space: EmbeddingSpace) -> VectorIndex | None:
    return space.indexes.order_by("-version").first()


def open_index(index: VectorIndex) -> Any:
    """The FAISS index of a VectorIndex row, memory-mapped and kept per process."""
    from curation.retrieval.index import load_index

    with _loaded_lock:
        if index.path not in _loaded:
            _loaded[index.path] = load_index(index.path)
        return _loaded[index.path]


def enqueue_build_index(space: EmbeddingSpace, *, user: Any = None) -> Job:
    return enqueue_job("build_index", params={"space_id": space.pk}, user=user, target=space)
