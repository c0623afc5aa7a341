"""Inline SVG charts for admin pages: no plotting library, no image files, no JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe


def loss_curve_svg(
    points: Sequence[dict[str, Any]], width: int = 480, height: int = 160
) -> SafeString:
    """A polyline of loss against step with min/max labels; `points` are {"step", "loss"}."""
    clean = [(int(p["step"]), float(p["loss"])) for p in points if "step" in p and "loss" in p]
    if len(clean) < 2:
        return format_html(
            "<em>{}</em>", "no loss recorded yet" if not clean else f"loss {clean[0][1]:.4f}"
        )
    pad = 28
    steps = [s for s, _ in clean]
    losses = [v for _, v in clean]
    s_lo, s_hi = min(steps), max(steps)
    l_lo, l_hi = min(losses), max(losses)
    s_span = (s_hi - s_lo) or 1
    l_span = (l_hi - l_lo) or 1.0

    def x(step: int) -> float:
        return pad + (step - s_lo) / s_span * (width - 2 * pad)

    def y(loss: float) -> float:
        return height - pad - (loss - l_lo) / l_span * (height - 2 * pad)

    line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in clean)
    # Safe: only numbers formatted here go into the markup.
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="loss curve" style="background:#fff;border:1px solid #ddd">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<polyline fill="none" stroke="#417690" stroke-width="1.5" points="{line}"/>'
        f'<text x="2" y="{pad}" font-size="10">{l_hi:.4g}</text>'
        f'<text x="2" y="{height - pad}" font-size="10">{l_lo:.4g}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="10">step {s_lo}</text>'
        f'<text x="{width - pad - 50}" y="{height - 8}" font-size="10">step {s_hi}</text>'
        "</svg>"
    )
