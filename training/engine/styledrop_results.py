"""What a `styledrop_iterative` run reports: one `IterationResult` per iteration inside a
`TrainResult` over all of them, rebuilt from the run's state file (so a continued run reports
the iterations an earlier process finished too)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine.config import TrainConfig
from training.engine.run_types import TrainResult
from training.engine.styledrop_files import (
    GENERATIONS_DIR,
    GENERATIONS_INDEX,
    SELECTION_FILE,
    RunState,
    iteration_dir_name,
)
from training.engine.styledrop_settings import StyleDropIterativeSettings


@dataclass
class IterationResult:
    """One iteration as the Django side stores it: a Checkpoint (with its lineage), the manifest
    it trained on (a DatasetVersion), and the feedback on its generations."""

    iteration: int
    output_dir: str
    checkpoint_path: str | None
    checkpoints: list[str]
    train_manifest: str
    train_manifest_sha256: str
    trained_on: dict[str, int]  # {"references": n, "generations": m}
    initialized_from: str | None  # the previous iteration's checkpoint, None for iteration 1
    steps: int
    final_loss: float | None
    generations_dir: str | None = None
    generations_index: str | None = None
    selection_file: str | None = None
    selection: dict[str, Any] | None = None  # stats, see `selection_stats`


@dataclass
class StyleDropIterativeResult(TrainResult):
    """A TrainResult over all iterations (steps, losses and checkpoints concatenated) plus the
    per-iteration detail; `status` is "completed" or "cancelled"."""

    iterations: list[IterationResult] = field(default_factory=list)


def relative_result(root: Path, result: TrainResult) -> dict[str, Any]:
    def relative(path: str | None) -> str | None:
        return None if path is None else os.path.relpath(path, root)

    return {
        "step": result.step,
        "total_steps": result.total_steps,
        "checkpoint_path": relative(result.checkpoint_path),
        "checkpoints": [relative(p) for p in result.checkpoints],
        "losses": result.losses,
        "role_losses": result.role_losses,
        "skipped_images": result.skipped_images,
    }


def build_result(
    config: TrainConfig,
    settings: StyleDropIterativeSettings,
    root: Path,
    state: RunState,
    status: str,
    run_info: Mapping[str, Any],
    started: float,
) -> StyleDropIterativeResult:
    def absolute(path: str | None) -> str | None:
        return None if path is None else str(root / path)

    iterations: list[IterationResult] = []
    steps, losses, role_losses = 0, [], []
    skipped = list(state.data["references"]["skipped"])
    device, mixed_precision = run_info.get("device"), run_info.get("mixed_precision")
    for k in range(1, settings.iterations + 1):
        record = state.data["iterations"].get(str(k))
        if not record:
            break
        train = record.get("train") or record.get("partial")
        if train is None:
            continue
        device = device or record.get("device")
        mixed_precision = mixed_precision or record.get("mixed_precision")
        steps += train["step"]
        losses += train["losses"]
        role_losses += train["role_losses"]
        skipped += train["skipped_images"]
        if "train" not in record:  # cancelled mid-iteration: counted, not reported as done
            continue
        folder = root / iteration_dir_name(k)
        generated = record["stage"] in ("generated", "selected")
        selected = record["stage"] == "selected"
        iterations.append(
            IterationResult(
                iteration=k,
                output_dir=str(folder),
                checkpoint_path=absolute(train["checkpoint_path"]),
                checkpoints=[str(root / p) for p in train["checkpoints"]],
                train_manifest=str(root / record["manifest"]["path"]),
                train_manifest_sha256=record["manifest"]["sha256"],
                trained_on=dict(record["manifest"]["trained_on"]),
                initialized_from=absolute(record.get("initialized_from")),
                steps=train["step"],
                final_loss=train["losses"][-1] if train["losses"] else None,
                generations_dir=str(folder / GENERATIONS_DIR) if generated else None,
                generations_index=str(folder / GENERATIONS_DIR / GENERATIONS_INDEX)
                if generated
                else None,
                selection_file=str(folder / SELECTION_FILE) if selected else None,
                selection=record.get("selection"),
            )
        )
    last = iterations[-1] if iterations else None
    return StyleDropIterativeResult(
        status=status,
        step=steps,
        total_steps=config.steps * settings.iterations,
        checkpoint_path=last.checkpoint_path if last else None,
        checkpoints=[i.checkpoint_path for i in iterations if i.checkpoint_path],
        losses=losses,
        role_losses=role_losses,
        skipped_images=skipped,
        device=str(device) if device else "",
        mixed_precision=str(mixed_precision or config.mixed_precision),
        output_dir=str(root),
        seconds=time.perf_counter() - started,
        iterations=iterations,
    )
