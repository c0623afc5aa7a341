"""Reads about recipe runs shown on the run page and the review grid."""

from __future__ import annotations

from typing import Any

from curation.models import RecipeRun


def decisions_summary(run: RecipeRun) -> str:
    """One sentence: how many decisions the run's ranking rests on and what they moved."""
    report: dict[str, Any] = run.stats.get("decisions") or {}
    if run.stats.get("status") != "done":
        return "The run has not finished; its ranking rests on no decisions yet."
    n = int(report.get("decisions", 0))
    if not n:
        note = report.get("reason") or "no decisions recorded for this recipe yet"
        return f"The ranking rests on 0 decisions ({note})."
    text = (
        f"The ranking rests on {n} decisions ({report.get('positives', 0)} accepted, "
        f"{report.get('negatives', 0)} rejected)."
    )
    if report.get("used"):
        text += (
            f" Held-out accuracy on them by {report['folds']}-fold cross-validation: "
            f"{report['cv_accuracy']:.3f} with the decisions (classifier alone "
            f"{report['cv_accuracy_classifier']:.3f}), against "
            f"{report['accuracy_without_decisions']:.3f} for the label model without them; "
            f"classifier weight {report['classifier_weight']:.2f}."
        )
    elif report.get("accuracy_without_decisions") is not None:
        text += (
            f" The label model without them gets {report['accuracy_without_decisions']:.3f} "
            "of them right."
        )
    if report.get("reason"):
        text += f" Note: {report['reason']}."
    return text
