"""Heuristic labelling functions: each votes sticker (1), not sticker (0) or abstains (−1).

An LF is a small dataclass (kind + name + thresholds) so a Recipe stores it as JSON and
rebuilds it with `lf_from_config`. LFs vote on whole feature columns at once (see
`curation.weak.features`; similarity columns `text:<query>` and `exemplar:<set>` are added by
the recipe), so a million images take one vectorised pass. A missing column or a NaN value is
an abstention: an LF never guesses about what it cannot see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

STICKER, NOT_STICKER, ABSTAIN = 1, 0, -1
# A veto LF is a narrow detector of one kind of non-sticker. Where it votes "not", the recipe
# scales the label model's P(sticker) by this factor (see curation.weak.recipe).
VETO_FACTOR = 0.25
FeatureColumns = Mapping[str, np.ndarray]


def _column(table: FeatureColumns, name: str, n: int) -> np.ndarray:
    values = table.get(name)
    return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)


def _rows(table: FeatureColumns) -> int:
    return len(next(iter(table.values()))) if table else 0


@dataclass
class LabellingFunction:
    """Base: subclasses set `kind` and implement `votes`."""

    kind: ClassVar[str] = ""
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.default_name()

    def default_name(self) -> str:
        return self.kind

    def votes(self, table: FeatureColumns) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, table: FeatureColumns) -> np.ndarray:
        return self.votes(table).astype(np.int8)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def needs_columns(self) -> list[str]:
        return []


def _threshold_votes(
    values: np.ndarray, positive_above: float | None, negative_below: float | None
) -> np.ndarray:
    out = np.full(len(values), ABSTAIN, np.int8)
    known = ~np.isnan(values)
    if negative_below is not None:
        out[known & (values < negative_below)] = NOT_STICKER
    if positive_above is not None:
        out[known & (values >= positive_above)] = STICKER
    return out


class _ColumnThresholdVotes:
    """Votes of the functions that threshold one feature column (generic, text, exemplar)."""

    positive_above: float | None
    negative_below: float | None

    @property
    def column(self) -> str:
        raise NotImplementedError

    def votes(self, table: FeatureColumns) -> np.ndarray:
        return _threshold_votes(
            _column(table, self.column, _rows(table)), self.positive_above, self.negative_below
        )

    def needs_columns(self) -> list[str]:
        return [self.column]


@dataclass
class Threshold(_ColumnThresholdVotes, LabellingFunction):
    """Generic: sticker when `column` ≥ positive_above, not when < negative_below."""

    kind: ClassVar[str] = "threshold"
    column: str = ""
    positive_above: float | None = None
    negative_below: float | None = None

    def default_name(self) -> str:
        return f"threshold:{self.column}"


@dataclass
class ClipTextSimilarity(_ColumnThresholdVotes, LabellingFunction):
    """CLIP image–text cosine against one query; thresholds depend on the model, so set them."""

    kind: ClassVar[str] = "clip_text"
    query: str = "a sticker"
    positive_above: float | None = 0.25
    negative_below: float | None = 0.15

    def default_name(self) -> str:
        return f"text:{self.query}"

    @property
    def column(self) -> str:
        return f"text:{self.query}"


@dataclass
class ExemplarSimilarity(_ColumnThresholdVotes, LabellingFunction):
    """Max cosine to a named set of exemplar images (the recipe's exemplars are "exemplars")."""

    kind: ClassVar[str] = "exemplar"
    exemplar_set: str = "exemplars"
    positive_above: float | None = 0.8
    negative_below: float | None = None

    def default_name(self) -> str:
        return f"exemplar:{self.exemplar_set}"

    @property
    def column(self) -> str:
        return f"exemplar:{self.exemplar_set}"


@dataclass
class TransparentBackground(LabellingFunction):
    """A cut-out: real transparency that reaches the border. Opaque images say nothing."""

    kind: ClassVar[str] = "has_alpha"
    min_transparent: float = 0.05
    min_border_transparent: float = 0.5

    def votes(self, table: FeatureColumns) -> np.ndarray:
        n = _rows(table)
        inside = _column(table, "transparent_fraction", n)
        border = _column(table, "border_transparent_fraction", n)
        out = np.full(n, ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            out[(inside >= self.min_transparent) & (border >= self.min_border_transparent)] = (
                STICKER
            )
        return out


@dataclass
class UniformBorder(_ColumnThresholdVotes, LabellingFunction):
    """Stickers sit on one background colour; photos run to the edge with varied content."""

    kind: ClassVar[str] = "uniform_border"
    positive_above: float | None = 0.95
    negative_below: float | None = 0.5

    @property
    def column(self) -> str:
        return "border_uniformity"


@dataclass
class FewColours(LabellingFunction):
    """Flat artwork needs few colours to cover 90 % of its pixels; photos need hundreds.

    Greyscale pictures (mean chroma below `min_chroma`) get no sticker vote: sixteen grey
    levels are "few colours" for a microscopy crop or a scan as much as for line art.
    """

    kind: ClassVar[str] = "few_colours"
    max_colours: int = 12
    photo_min_colours: int = 64
    min_chroma: float = 8.0

    def votes(self, table: FeatureColumns) -> np.ndarray:
        n = _rows(table)
        colours = _column(table, "colours_90", n)
        chroma = _column(table, "chroma_mean", n)
        out = np.full(len(colours), ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            out[colours >= self.photo_min_colours] = NOT_STICKER
            out[(colours <= self.max_colours) & ~(chroma < self.min_chroma)] = STICKER
        return out


@dataclass
class FlatRegions(_ColumnThresholdVotes, LabellingFunction):
    """Share of pixels equal to their neighbours: high for flat fills, low for noise/texture."""

    kind: ClassVar[str] = "flat_regions"
    positive_above: float | None = 0.8
    negative_below: float | None = 0.4

    @property
    def column(self) -> str:
        return "flat_fraction"


@dataclass
class AspectRatio(LabellingFunction):
    """Banners and panoramas are not stickers; a near-square shape says nothing either way."""

    kind: ClassVar[str] = "aspect_ratio"
    max_ratio: float = 2.5

    def votes(self, table: FeatureColumns) -> np.ndarray:
        n = _rows(table)
        width, height = _column(table, "width", n), _column(table, "height", n)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.maximum(width, height) / np.minimum(width, height)
        out = np.full(n, ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            out[ratio > self.max_ratio] = NOT_STICKER
        return out


@dataclass
class SizeLimits(LabellingFunction):
    """Too small to train on or implausibly large: vote no; otherwise abstain."""

    kind: ClassVar[str] = "size_limits"
    min_side: int = 64
    max_side: int = 8192

    def votes(self, table: FeatureColumns) -> np.ndarray:
        n = _rows(table)
        width, height = _column(table, "width", n), _column(table, "height", n)
        out = np.full(n, ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            small = np.minimum(width, height) < self.min_side
            large = np.maximum(width, height) > self.max_side
        out[small | large] = NOT_STICKER
        return out


@dataclass
class ChartStructure(LabellingFunction):
    """A chart or plot: mostly white paper crossed by thin horizontal and vertical lines.

    Axes, frames and gridlines are thin lines spanning much of the picture both ways; a
    sticker's outline is thick or curved, and a filled shape leaves little white.
    """

    kind: ClassVar[str] = "chart_structure"
    min_white: float = 0.75
    min_lines: int = 4  # a plot's frame alone is four; gridlines add more
    veto: bool = True

    def votes(self, table: FeatureColumns) -> np.ndarray:
        n = _rows(table)
        white = _column(table, "white_fraction", n)
        h, v = _column(table, "h_lines", n), _column(table, "v_lines", n)
        out = np.full(n, ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            chart = (white >= self.min_white) & (h >= 1) & (v >= 1) & (h + v >= self.min_lines)
        out[chart] = NOT_STICKER
        return out


@dataclass
class GreyscaleCrop(LabellingFunction):
    """No colour, and content running to the edge without a cut-out: a scan or micrograph crop."""

    kind: ClassVar[str] = "greyscale_crop"
    max_chroma: float = 8.0
    max_border_uniformity: float = 0.9
    max_transparent: float = 0.05
    veto: bool = True

    def votes(self, table: FeatureColumns) -> np.ndarray:
        n = _rows(table)
        chroma = _column(table, "chroma_mean", n)
        border = _column(table, "border_uniformity", n)
        transparent = _column(table, "transparent_fraction", n)
        out = np.full(n, ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            crop = (
                (chroma < self.max_chroma)
                & (border < self.max_border_uniformity)
                & ~(transparent >= self.max_transparent)
            )
        out[crop] = NOT_STICKER
        return out


@dataclass
class NoiseTexture(LabellingFunction):
    """Strong edges everywhere: noise and texture, where artwork has edges only on outlines."""

    kind: ClassVar[str] = "noise_texture"
    min_edge_cells: float = 0.85
    veto: bool = True

    def votes(self, table: FeatureColumns) -> np.ndarray:
        cells = _column(table, "edge_cells", _rows(table))
        out = np.full(len(cells), ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            out[cells >= self.min_edge_cells] = NOT_STICKER
        return out


@dataclass
class OpaqueAlpha(LabellingFunction):
    """An alpha channel that is present but fully opaque: a flattened picture saved as RGBA,
    not a cut-out. Images without alpha, and real cut-outs, get no vote."""

    kind: ClassVar[str] = "opaque_alpha"
    min_opaque: float = 0.999
    veto: bool = True

    def votes(self, table: FeatureColumns) -> np.ndarray:
        opaque = _column(table, "opaque_fraction", _rows(table))
        out = np.full(len(opaque), ABSTAIN, np.int8)
        with np.errstate(invalid="ignore"):
            out[opaque >= self.min_opaque] = NOT_STICKER
        return out


LF_KINDS: dict[str, type[LabellingFunction]] = {
    cls.kind: cls
    for cls in (
        Threshold,
        ClipTextSimilarity,
        ExemplarSimilarity,
        TransparentBackground,
        UniformBorder,
        FewColours,
        FlatRegions,
        AspectRatio,
        SizeLimits,
        ChartStructure,
        GreyscaleCrop,
        NoiseTexture,
        OpaqueAlpha,
    )
}


def lf_from_config(config: Mapping[str, Any]) -> LabellingFunction:
    """Rebuild an LF from `to_config()` output; errors name the bad kind or field."""
    data = dict(config)
    kind = data.pop("kind", None)
    if kind not in LF_KINDS:
        raise ValueError(f"labelling function kind {kind!r}: unknown (known: {sorted(LF_KINDS)})")
    cls = LF_KINDS[kind]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(
            f"labelling function {kind!r}: unknown field(s) {unknown}, allowed {sorted(allowed)}"
        )
    return cls(**data)


def default_heuristic_lfs() -> list[LabellingFunction]:
    """The LFs of the built-in `heuristics` recipe: none needs CLIP weights."""
    return [
        TransparentBackground(),
        UniformBorder(),
        FewColours(),
        FlatRegions(),
        AspectRatio(),
        SizeLimits(),
        ChartStructure(),
        GreyscaleCrop(),
        NoiseTexture(),
        OpaqueAlpha(),
    ]


def veto_mask(lfs: Sequence[LabellingFunction], votes: np.ndarray) -> np.ndarray:
    """Rows where some LF with `veto` set voted not-sticker."""
    columns = [j for j, lf in enumerate(lfs) if getattr(lf, "veto", False)]
    if not columns:
        return np.zeros(len(votes), bool)
    return (votes[:, columns] == NOT_STICKER).any(axis=1)


def vote_matrix(lfs: Sequence[LabellingFunction], table: FeatureColumns) -> np.ndarray:
    """(n_images, n_lfs) int8 votes in {−1, 0, 1}."""
    names = [lf.name for lf in lfs]
    if len(set(names)) != len(names):
        raise ValueError(f"labelling function names must be unique, got {names}")
    n = _rows(table)
    if not lfs:
        return np.zeros((n, 0), np.int8)
    return np.stack([lf(table) for lf in lfs], axis=1)
