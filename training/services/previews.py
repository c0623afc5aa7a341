"""Validation previews into the TrainingRun: the engine writes grids and `previews/index.json`
into the run's output folder (training/engine/previews.py); this stores each new grid in media
storage and records it on `TrainingRun.previews`, which the admin run page shows beside the
loss curve."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from curation.services.storage import store_bytes
from training.models import TrainingRun

logger = logging.getLogger(__name__)


def import_previews(run: TrainingRun, output_dir: str | Path) -> int:
    """Record the previews the engine has written that `run` does not hold yet (a step written
    again after a resume replaces the old one); returns how many were recorded."""
    from training.engine.previews import PREVIEWS_DIR, read_preview_index

    root = Path(output_dir) / PREVIEWS_DIR
    held = {int(p["step"]): p for p in run.previews}
    imported = 0
    for entry in read_preview_index(output_dir):
        step = int(entry["step"])
        grid = root / entry["grid"]
        try:
            data = grid.read_bytes()
        except OSError as error:
            logger.warning("run %s: preview grid %s unreadable: %s", run.pk, grid, error)
            continue
        digest = hashlib.sha256(data).hexdigest()
        if held.get(step, {}).get("grid_sha256") == digest:
            continue
        held[step] = {
            "step": step,
            "grid_key": store_bytes(data, "png", prefix="previews", sha256=digest),
            "grid_sha256": digest,
            "prompts": list(entry["prompts"]),
            "seeds": list(entry["seeds"]),
        }
        imported += 1
    if imported:
        run.previews = [held[step] for step in sorted(held)]
        TrainingRun.objects.filter(pk=run.pk).update(previews=run.previews)
    return imported


def drop_previews_after(run: TrainingRun, step: int) -> None:
    """A resumed run redraws the steps after its checkpoint: forget their previews."""
    kept = [p for p in run.previews if int(p["step"]) <= step]
    if kept != run.previews:
        run.previews = kept
        TrainingRun.objects.filter(pk=run.pk).update(previews=kept)
