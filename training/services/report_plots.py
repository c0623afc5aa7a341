"""Plots of a round report as inline SVG (matplotlib, no display needed).

matplotlib is imported when a plot is drawn, not with the module: the report views import this
at every Django process's start-up, and pyplot costs most of a second there.
"""

from __future__ import annotations

import io
from typing import Any

METRICS = (
    ("text_score", "CLIP text alignment"),
    ("style_score", "style similarity"),
    ("diversity", "scene diversity"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(figure: Any) -> str:
    plt = _pyplot()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def trend_svg(points: list[dict[str, Any]]) -> str:
    """Metric of the new checkpoint per round, one line per metric."""
    figure, axes = _pyplot().subplots(1, len(METRICS), figsize=(10, 2.6))
    labels = [p["label"] for p in points]
    for ax, (key, title) in zip(axes, METRICS, strict=True):
        values = [p.get(key) for p in points]
        xs = [i for i, v in enumerate(values) if v is not None]
        ax.plot(xs, [values[i] for i in xs], marker="o", color="#417690")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7, rotation=30)
        ax.tick_params(axis="y", labelsize=7)
    figure.suptitle("Metrics across rounds (new checkpoint)", fontsize=10)
    return _svg(figure)


def category_svg(
    by_category: dict[str, dict[str, dict[str, Any]]], metric: str = "text_score"
) -> str:
    """Per prompt category, one bar per arm, with its prompt-resampled 95 % interval."""
    arms = list(by_category)
    categories = sorted({c for arm in arms for c in by_category[arm]})
    figure, ax = _pyplot().subplots(figsize=(8, 2.8))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        entries = [by_category[arm].get(c, {}) for c in categories]
        values = [e.get(metric) or 0.0 for e in entries]
        errors = [
            [
                max(0.0, v - e[f"{metric}_ci"][0]) if e.get(f"{metric}_ci") else 0.0
                for v, e in zip(values, entries, strict=True)
            ],
            [
                max(0.0, e[f"{metric}_ci"][1] - v) if e.get(f"{metric}_ci") else 0.0
                for v, e in zip(values, entries, strict=True)
            ],
        ]
        ax.bar(
            [x + i * width for x in range(len(categories))],
            values,
            width=width,
            yerr=errors,
            capsize=2,
            label=arm.replace("_", " "),
        )
    ax.set_xticks([x + width * (len(arms) - 1) / 2 for x in range(len(categories))])
    ax.set_xticklabels(categories, fontsize=8)
    ax.set_title(f"{metric.replace('_', ' ')} by prompt category (95 % CI by prompt)", fontsize=10)
    ax.legend(fontsize=7)
    return _svg(figure)
