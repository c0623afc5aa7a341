"""A Recipe: retrieval queries plus labelling functions plus a label model, run over a pool.

Flow of `run_recipe`:
1. queries (text, negative text, exemplar and counter-exemplar images, raw vectors) combine into
   one query vector (see `curation.retrieval.search.combine_queries`);
2. candidates: the index's top_k for that vector, or every embedded image ranked exactly when no
   index is given, or every image with features when the recipe has no query at all (the
   built-in `heuristics` recipe needs no CLIP weights);
3. similarity columns for CLIP-based LFs are added to each candidate's features, every LF votes,
   the label model turns votes into P(sticker);
4. where a veto LF (a narrow detector of charts, greyscale crops, noise, flattened RGBA) votes
   "not", P(sticker) is scaled by VETO_FACTOR: the same pictures fool the correlated artwork
   LFs (uniform border, few colours, flat regions) all at once, and an unsupervised label model
   trusts three agreeing LFs over one rare dissenter; decisions can measure either;
5. with decisions (`gold`), the label model takes them as gold and a small classifier fitted on
   them is mixed into P(sticker) (see `curation.weak.decisions`);
6. score = lf_weight·P(sticker) + (1 − lf_weight)·similarity percentile in the pool (exact
   without an index, from a pool sample with one, among the candidates when only an index is
   given); just P when there is no query, just the percentile when there are no LFs; weak label =
   score ≥ score_threshold, or −1 when nothing at all spoke about an image.

This module never imports Django: the caller passes vectors, index, features and encoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from curation.weak.decisions import DecisionReport, learn_from_decisions
from curation.weak.features import feature_table
from curation.weak.label_model import LFStats, fit_label_model, lf_summary
from curation.weak.labelling_functions import (
    VETO_FACTOR,
    ClipTextSimilarity,
    ExemplarSimilarity,
    LabellingFunction,
    default_heuristic_lfs,
    lf_from_config,
    veto_mask,
    vote_matrix,
)

_REFERENCE = 20_000  # pool sample size for similarity percentiles when searching an index


@dataclass
class WeightedQuery:
    text: str
    weight: float = 1.0


@dataclass
class RecipeSpec:
    """What a Recipe row stores (as `to_json()`), enough to rerun it exactly."""

    name: str
    text_queries: list[WeightedQuery] = field(default_factory=list)
    negative_queries: list[WeightedQuery] = field(default_factory=list)
    exemplar_ids: list[int] = field(default_factory=list)
    counter_exemplar_ids: list[int] = field(default_factory=list)
    # Exemplars from outside the pool, already embedded in the same EmbeddingSpace.
    exemplar_vectors: list[list[float]] = field(default_factory=list)
    exemplar_weight: float = 1.0
    counter_exemplar_weight: float = 0.5
    lfs: list[LabellingFunction] = field(default_factory=list)
    label_model: str = "dawid_skene"
    lf_weight: float = 0.5
    score_threshold: float = 0.5
    top_k: int | None = None

    def has_query(self) -> bool:
        return bool(self.text_queries or self.exemplar_ids or self.exemplar_vectors)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lfs"] = [lf.to_config() for lf in self.lfs]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecipeSpec:
        data = dict(data)
        for key in ("text_queries", "negative_queries"):
            data[key] = [WeightedQuery(**q) for q in data.get(key, [])]
        data["lfs"] = [lf_from_config(c) for c in data.get("lfs", [])]
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"recipe {data.get('name')!r}: unknown field(s) {unknown}")
        return cls(**data)


def heuristics_recipe() -> RecipeSpec:
    """The built-in recipe: labelling functions on image measurements only, no CLIP at all."""
    return RecipeSpec(name="heuristics", lfs=default_heuristic_lfs(), lf_weight=1.0)


@dataclass
class RecipeResult:
    """Per candidate image, best score first. Arrays, so a million rows stay cheap."""

    name: str
    image_ids: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    weak_labels: np.ndarray
    similarities: np.ndarray  # NaN when the recipe had no query
    votes: np.ndarray  # (n, n_lfs) int8 in {−1, 0, 1}
    lf_names: list[str]
    lf_stats: list[LFStats]
    label_model: str
    query_vector: np.ndarray | None = None
    decisions: DecisionReport = field(default_factory=DecisionReport)

    @property
    def certainty(self) -> np.ndarray:
        """|2p − 1| of P(sticker): 0 where the run is least sure, the review-next order."""
        return np.abs(2 * self.probabilities - 1)

    def __len__(self) -> int:
        return len(self.image_ids)

    def rows(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self.image_ids)):
            yield {
                "image_id": int(self.image_ids[i]),
                "score": float(self.scores[i]),
                "weak_label": int(self.weak_labels[i]),
                "probability": float(self.probabilities[i]),
                "similarity": None
                if np.isnan(self.similarities[i])
                else float(self.similarities[i]),
                "lf_votes": {n: int(v) for n, v in zip(self.lf_names, self.votes[i], strict=True)},
            }


class _Vectors(Protocol):
    """What run_recipe needs from a vector store (curation.retrieval.search.VectorStore)."""

    ids: np.ndarray

    def get(self, image_ids: Sequence[int] | np.ndarray) -> np.ndarray: ...

    def scores(self, query: np.ndarray) -> np.ndarray: ...


def _text_vectors(
    texts: Sequence[str], cache: Mapping[str, np.ndarray] | None, bundle: Any
) -> dict[str, np.ndarray]:
    out = {t: np.asarray(cache[t], np.float32) for t in texts if cache and t in cache}
    missing = [t for t in dict.fromkeys(texts) if t not in out]
    if missing:
        if bundle is None:
            raise ValueError(
                f"text queries {missing} need a CLIP encoder (bundle) or precomputed text_vectors"
            )
        from curation.retrieval.clip_models import encode_texts

        out.update(zip(missing, encode_texts(bundle, missing), strict=True))
    return out


def _percentile(values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Share of `reference` (the pool's similarities, or the candidates' own) below each value."""
    reference = np.sort(values if reference is None else np.asarray(reference, np.float64))
    if not len(reference):
        return np.ones(len(values))
    return np.searchsorted(reference, values, side="right") / len(reference)


def run_recipe(
    spec: RecipeSpec,
    features: Mapping[int, Mapping[str, float] | None],
    *,
    vectors: _Vectors | None = None,
    index: Any = None,
    bundle: Any = None,
    text_vectors: Mapping[str, np.ndarray] | None = None,
    gold: Mapping[int, int] | None = None,
    allowed_ids: np.ndarray | None = None,
) -> RecipeResult:
    """Run `spec` over the pool: `features` maps image id → feature dict (see weak.features).

    `allowed_ids` (when given) is the only set candidates are drawn from: vectors and indexes
    built earlier may still hold images the caller no longer allows (quarantined ones).

    `vectors` (a VectorStore) is needed for any query or CLIP LF; `index` (a VectorIndex) makes
    candidate retrieval approximate and fast when `spec.top_k` is set; `bundle` encodes text
    queries unless `text_vectors` already holds them; `gold` (id → 0/1, the data lead's
    decisions) is gold for the label model, trains the decision classifier and gives each LF
    its accuracy on the decided images. `features` may offer `prefetch(ids)` (a lazy mapping
    over a database): it is called once with every candidate before any lookup.
    """
    lf_texts = [lf.query for lf in spec.lfs if isinstance(lf, ClipTextSimilarity)]
    query_texts = [q.text for q in spec.text_queries + spec.negative_queries]
    needs_vectors = (
        spec.has_query() or lf_texts or any(isinstance(lf, ExemplarSimilarity) for lf in spec.lfs)
    )
    if needs_vectors and vectors is None:
        raise ValueError(f"recipe {spec.name!r}: its queries or CLIP LFs need embedded vectors")
    texts = (
        _text_vectors(query_texts + lf_texts, text_vectors, bundle)
        if query_texts + lf_texts
        else {}
    )

    if needs_vectors:  # imported here so the heuristics recipe never loads torch
        from curation.retrieval.search import combine_queries, mean_query

    exemplar_rows = []
    if spec.exemplar_ids:
        assert vectors is not None  # exemplar ids make needs_vectors true, checked above
        exemplar_rows.append(vectors.get(spec.exemplar_ids))
    if spec.exemplar_vectors:
        exemplar_rows.append(np.asarray(spec.exemplar_vectors, np.float32))
    exemplars = np.concatenate(exemplar_rows) if exemplar_rows else None

    query = None
    if spec.has_query():
        positives = [texts[q.text] for q in spec.text_queries]
        weights = [q.weight for q in spec.text_queries]
        if exemplars is not None:
            positives.append(mean_query(exemplars))
            weights.append(spec.exemplar_weight)
        negatives = [texts[q.text] for q in spec.negative_queries]
        negative_weights = [q.weight for q in spec.negative_queries]
        if spec.counter_exemplar_ids:
            assert vectors is not None  # a query makes needs_vectors true, checked above
            negatives.append(mean_query(vectors.get(spec.counter_exemplar_ids)))
            negative_weights.append(spec.counter_exemplar_weight)
        query = combine_queries(positives, negatives, weights, negative_weights)

    # Candidates, their similarity to the query, and a sample of the pool's similarities that
    # turns a cosine into "beats this share of the pool" (cosines are not comparable across
    # queries or models; percentiles are).
    reference = None
    if query is not None and index is not None and spec.top_k:
        from curation.retrieval.index import search

        hits = search(index, query, spec.top_k, allowed_ids=allowed_ids)
        keep = hits.ids[0] >= 0
        candidate_ids, similarity = hits.ids[0][keep], hits.scores[0][keep].astype(np.float64)
        if vectors is not None:
            rng = np.random.default_rng(0)
            sample = rng.choice(len(vectors.ids), min(len(vectors.ids), _REFERENCE), replace=False)
            reference = vectors.get(vectors.ids[np.sort(sample)]) @ query
    elif query is not None:
        assert vectors is not None  # a query makes needs_vectors true, checked above
        all_scores = vectors.scores(query)
        order = np.argsort(-all_scores, kind="stable")
        if allowed_ids is not None:
            order = order[np.isin(vectors.ids[order], allowed_ids)]
        order = order[: spec.top_k or None]
        candidate_ids, similarity = vectors.ids[order], all_scores[order].astype(np.float64)
        reference = all_scores
    else:
        candidate_ids = np.fromiter(features.keys(), dtype=np.int64, count=len(features))
        if allowed_ids is not None:
            candidate_ids = candidate_ids[np.isin(candidate_ids, allowed_ids)]
        similarity = np.full(len(candidate_ids), np.nan)

    prefetch = getattr(features, "prefetch", None)
    if callable(prefetch):
        prefetch(candidate_ids)
    table = feature_table([features.get(int(i)) for i in candidate_ids])
    candidate_vectors = None
    if vectors is not None and len(candidate_ids):
        try:
            candidate_vectors = vectors.get(candidate_ids)
        except KeyError:
            if needs_vectors and (lf_texts or exemplars is not None):
                raise
    if needs_vectors and (lf_texts or exemplars is not None) and len(candidate_ids):
        assert candidate_vectors is not None  # needs_vectors, checked above
        for text in lf_texts:
            table[f"text:{text}"] = candidate_vectors @ texts[text]
        if exemplars is not None:
            table["exemplar:exemplars"] = (candidate_vectors @ exemplars.T).max(axis=1)

    votes = vote_matrix(spec.lfs, table)
    names = [lf.name for lf in spec.lfs]
    gold_array = None
    if gold:
        gold_array = np.array([gold.get(int(i), -1) for i in candidate_ids], dtype=np.int64)
    vetoed = veto_mask(spec.lfs, votes)

    def label_model(rows: np.ndarray | slice, g: np.ndarray) -> np.ndarray:
        p = fit_label_model(votes[rows], spec.label_model, gold=g).probabilities
        return np.where(vetoed[rows], p * VETO_FACTOR, p)

    fitted = fit_label_model(votes, spec.label_model, gold=gold_array)
    probabilities = np.where(vetoed, fitted.probabilities * VETO_FACTOR, fitted.probabilities)
    report = DecisionReport(reason="no decisions recorded for this recipe yet")
    if gold_array is not None and spec.lfs:
        probabilities, report = learn_from_decisions(
            gold_array, votes, table, label_model, probabilities, vectors=candidate_vectors
        )
    outside = len(gold or {}) - report.decisions
    if outside:
        note = f"{outside} decided image(s) are not among this run's candidates"
        report.reason = f"{report.reason}; {note}" if report.reason else note
    if query is not None and spec.lfs:
        scores = spec.lf_weight * probabilities + (1 - spec.lf_weight) * _percentile(
            similarity, reference
        )
    elif query is not None:
        scores = _percentile(similarity, reference)
    else:
        scores = probabilities.copy()
    spoke = (votes >= 0).any(axis=1) | (query is not None)
    weak_labels = np.where(spoke, (scores >= spec.score_threshold).astype(np.int8), -1)

    stats = lf_summary(votes, names, gold_array)
    for j, lf_stats in enumerate(stats):
        if fitted.lf_true_positive_rate:
            lf_stats.learned_true_positive_rate = fitted.lf_true_positive_rate[j]
            lf_stats.learned_true_negative_rate = fitted.lf_true_negative_rate[j]
    order = np.lexsort((candidate_ids, -scores))  # ties broken by id so reruns agree
    if spec.top_k:
        order = order[: spec.top_k]
    return RecipeResult(
        name=spec.name,
        image_ids=candidate_ids[order],
        scores=scores[order],
        probabilities=probabilities[order],
        weak_labels=weak_labels[order].astype(np.int8),
        similarities=similarity[order],
        votes=votes[order],
        lf_names=names,
        lf_stats=stats,
        label_model=fitted.method,
        query_vector=query,
        decisions=report,
    )
