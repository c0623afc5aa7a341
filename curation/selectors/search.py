"""Search the pool of a space's latest index by text, by exemplar images or by image id.

Filters (status, has_alpha, source) are applied by over-fetching from FAISS and checking the
hits in the database, which costs one small query; when too few hits survive (a narrow filter)
the search is redone inside FAISS restricted to the allowed ids, so results stay exact-k.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import QuerySet

from curation.models import EmbeddingShard, EmbeddingSpace, Image, VectorIndex

OVERFETCH = 4
FILTERED_NPROBE = 256


@dataclass(frozen=True)
class SearchFilters:
    status: str | None = Image.Status.OK
    has_alpha: bool | None = None
    source: str | None = None  # Source name

    def apply(self, images: QuerySet) -> QuerySet:
        # The index may predate a quarantine: whatever the filter, those hits are dropped.
        images = images.exclude(status=Image.Status.QUARANTINED)
        if self.status:
            images = images.filter(status=self.status)
        if self.has_alpha is not None:
            images = images.filter(has_alpha=self.has_alpha)
        if self.source:
            images = images.filter(source__name=self.source)
        return images


def default_index(space: EmbeddingSpace | None = None) -> VectorIndex:
    """The latest index of `space`, or of the space indexed most recently."""
    indexes = VectorIndex.objects.select_related("space").order_by("-created_at", "-id")
    if space is not None:
        indexes = indexes.filter(space=space).order_by("-version")
    index = indexes.first()
    if index is None:
        where = f"space {space.name!r}" if space is not None else "any space"
        raise LookupError(f"no vector index for {where}; run `build_index` first")
    return index


def image_vectors(space: EmbeddingSpace, image_ids: Sequence[int]) -> np.ndarray:
    """Stored vectors of embedded images, in the order given; KeyError names a missing one."""
    wanted = [int(i) for i in image_ids]
    rows = image_vectors_by_id(space, wanted)
    missing = [i for i in wanted if i not in rows]
    if missing:
        raise KeyError(f"image {missing[0]} is not embedded in space {space.name!r}")
    return np.stack([rows[i] for i in wanted])


def image_vectors_by_id(space: EmbeddingSpace, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Stored vectors of those `image_ids` that are embedded: one query, each shard read once."""
    from curation.retrieval.embedding import read_shard

    wanted = np.unique(np.asarray(list(image_ids), dtype=np.int64))
    shards = (
        EmbeddingShard.objects.filter(space=space, status=EmbeddingShard.Status.DONE)
        .exclude(path="")
        .order_by("first_image_id")
        .values_list("first_image_id", "last_image_id", "path")
    )
    out: dict[int, np.ndarray] = {}
    for first, last, path in shards:
        inside = wanted[(wanted >= first) & (wanted <= last)]
        if not len(inside):
            continue
        ids, vectors = read_shard(path)
        at = np.searchsorted(ids, inside).clip(max=max(len(ids) - 1, 0))
        hit = (ids[at] == inside) if len(ids) else np.zeros(len(inside), bool)
        rows = np.asarray(vectors[at[hit]], dtype=np.float32)
        out.update(zip(inside[hit].tolist(), rows, strict=True))
    return out


def closest_text_per_image(
    space: EmbeddingSpace, image_ids: np.ndarray, text_vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, index of the closest text vector) of those `image_ids` that are embedded.

    Each shard is read once and compared as one matrix product: a million images never become a
    million Python objects."""
    return closest_text_chooser(space, text_vectors)(image_ids)


def closest_text_chooser(
    space: EmbeddingSpace, text_vectors: np.ndarray
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`closest_text_per_image` for batch after batch of ids: the space's shards are listed once
    and each is opened once (its ids read, 8 bytes an image; its vectors memory-mapped), so
    batches in any order cost one matrix product per shard they touch."""
    from curation.retrieval.embedding import read_shard

    shards = list(
        EmbeddingShard.objects.filter(space=space, status=EmbeddingShard.Status.DONE)
        .exclude(path="")
        .order_by("first_image_id")
        .values_list("first_image_id", "last_image_id", "path")
    )
    opened: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def shard(path: str) -> tuple[np.ndarray, np.ndarray]:
        if path not in opened:
            opened[path] = read_shard(path)
        return opened[path]

    def choose(image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = np.unique(np.asarray(image_ids, dtype=np.int64))
        found, best = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        for first, last_id, path in shards:
            inside = wanted[(wanted >= first) & (wanted <= last_id)]
            if not len(inside):
                continue
            ids, vectors = shard(path)
            if not len(ids):
                continue
            at = np.searchsorted(ids, inside).clip(max=len(ids) - 1)
            hit = ids[at] == inside
            rows = np.asarray(vectors[at[hit]], dtype=np.float32)
            found.append(inside[hit])
            best.append(np.argmax(rows @ text_vectors.T, axis=1).astype(np.int64))
        return np.concatenate(found), np.concatenate(best)

    return choose


def _decode(image: Image) -> Any:
    from PIL import Image as PILImage

    from curation.services.storage import read_bytes

    if not image.storage_key:
        raise ValueError(f"image {image.pk} has no stored bytes to use as an exemplar")
    picture = PILImage.open(io.BytesIO(read_bytes(image.storage_key)))
    picture.load()
    return picture


def query_vector(
    index: VectorIndex,
    *,
    text: str | Sequence[str] | None = None,
    exemplars: Sequence[Image] = (),
    image_ids: Sequence[int] = (),
) -> np.ndarray:
    """One unit query from texts, exemplar images (encoded now) and embedded image ids."""
    from curation.retrieval.search import combine_queries, exemplar_query, mean_query, text_query
    from curation.services.embeddings import bundle_for

    parts = []
    if text:
        texts = [text] if isinstance(text, str) else list(text)
        parts.append(text_query(bundle_for(index.space), texts))
    if exemplars:
        pictures = [_decode(image) for image in exemplars]
        parts.append(exemplar_query(bundle_for(index.space), pictures))
    if image_ids:
        parts.append(mean_query(image_vectors(index.space, image_ids)))
    if not parts:
        raise ValueError("search needs text, exemplar images or image ids")
    return combine_queries(parts)


def search_images(
    *,
    text: str | Sequence[str] | None = None,
    exemplars: Sequence[Image] = (),
    image_ids: Sequence[int] = (),
    k: int = 50,
    filters: SearchFilters | None = None,
    space: EmbeddingSpace | None = None,
    index: VectorIndex | None = None,
) -> list[tuple[Image, float]]:
    """Images most similar to the query, best first, with their cosine similarity.

    Images given by id are left out of their own results.
    """
    from curation.retrieval.index import search
    from curation.services.indexes import open_index

    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    filters = filters or SearchFilters()
    index = index or default_index(space)
    vector = query_vector(index, text=text, exemplars=exemplars, image_ids=image_ids)
    faiss_index = open_index(index)
    exclude = {int(i) for i in image_ids}
    wanted = k + len(exclude)

    hits = search(faiss_index, vector, wanted * OVERFETCH)
    found = _keep(hits.ids[0], hits.scores[0], filters, exclude)
    seen = int((hits.ids[0] >= 0).sum())
    if len(found) < k and seen < faiss_index.index.ntotal:  # the filter may hide more matches
        allowed = np.fromiter(
            filters.apply(Image.objects.all()).values_list("pk", flat=True), dtype=np.int64
        )
        nprobe = FILTERED_NPROBE if index.index_type.startswith("IVF") else None
        hits = search(faiss_index, vector, wanted, allowed_ids=allowed, nprobe=nprobe)
        found = _keep(hits.ids[0], hits.scores[0], filters, exclude)
    found = found[:k]
    images = Image.objects.select_related("source").in_bulk([i for i, _ in found])
    return [(images[i], score) for i, score in found if i in images]


def _keep(
    ids: np.ndarray, scores: np.ndarray, filters: SearchFilters, exclude: set[int]
) -> list[tuple[int, float]]:
    candidates = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]
    allowed = set(
        filters.apply(Image.objects.filter(pk__in=[i for i, _ in candidates])).values_list(
            "pk", flat=True
        )
    )
    return [(i, s) for i, s in candidates if i in allowed and i not in exclude]
