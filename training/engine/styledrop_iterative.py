"""The `styledrop_iterative` recipe: StyleDrop's train → generate → select → train-again loop,
driven on the engine's own training loop, generation and CLIP metrics, without Django.

Each iteration is an ordinary engine run (a `domain` run over that iteration's training
manifest, so its checkpoint loads and generates like any other); iteration k > 1 starts from
iteration k-1's adapter. Between iterations the previous model generates `prompts` x `seeds`,
feedback selects (CLIP score, or a human callback), and the selection is written as the next
iteration's manifest, each row naming the iteration and generation it came from.

Everything lives under `output_dir` (layout and state: `styledrop_files.py`; feedback:
`styledrop_feedback.py`).

State is written atomically after every stage (prepared, trained, generated, selected), so a
killed run started again with the same config continues where it stopped: finished iterations are
not retrained, generations are not redrawn (annotators judge exactly those ids), and an iteration
killed mid-training resumes from its latest checkpoint. Human feedback that is not in yet raises
`FeedbackPending` after the state is saved; the caller runs the recipe again later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.engine.config import ConfigError, TrainConfig
from training.engine.data import Resolver
from training.engine.loop import Trainer
from training.engine.run_types import CancelFn, ProgressFn, TrainResult
from training.engine.styledrop_feedback import (
    FeedbackPending,
    FeedbackSelection,
    Generation,
    HumanFeedback,
    select_by_feedback,
    selection_stats,
)
from training.engine.styledrop_files import (
    GENERATIONS_DIR,
    RECIPE,
    SELECTION_FILE,
    RunState,
    copy_references,
    generation_rows,
    iteration_dir_name,
    read_generations,
    reference_rows,
    write_generations_index,
    write_json,
    write_train_manifest,
)
from training.engine.styledrop_results import (
    IterationResult,
    StyleDropIterativeResult,
    build_result,
    relative_result,
)
from training.engine.styledrop_settings import StyleDropIterativeSettings

logger = logging.getLogger(__name__)

# Adapters whose params carry the style descriptor (StyleDrop's and FineStyle's LoRA kinds).
DESCRIPTOR_ADAPTERS = ("styledrop", "finestyle", "kv_lora")

__all__ = [
    "FeedbackPending",
    "IterationResult",
    "StyleDropIterativeResult",
    "run_styledrop_iterative_training",
]


# ---- training -----------------------------------------------------------------------------------
def iteration_config(
    config: TrainConfig,
    root: Path,
    iteration: int,
    manifest: dict[str, Any],
    initialized_from: str | None = None,
) -> TrainConfig:
    """The plain engine run of one iteration: the outer config on that iteration's manifest,
    started from the previous iteration's adapter (`init_from`; iteration 1 from the outer
    config's own `init_from`, if any). The adapter keeps the run's style descriptor, so the
    iteration's checkpoint samples with it like any StyleDrop checkpoint."""
    data = config.to_dict()
    descriptor = StyleDropIterativeSettings.from_config(config).descriptor(config)
    if "style_descriptor" in data["adapter_params"] or config.adapter in DESCRIPTOR_ADAPTERS:
        data["adapter_params"] = {**data["adapter_params"], "style_descriptor": descriptor}
    if initialized_from is not None:
        data["init_from"] = str(root / initialized_from)
    data.update(
        recipe="domain",
        output_dir=str(root / iteration_dir_name(iteration)),
        datasets={
            "domain": {
                "manifest": str(root / manifest["path"]),
                "sha256": manifest["sha256"],
                "image_root": str(root),
                "split": "train",
                "version_id": None,
            }
        },
        styledrop={},
    )
    return TrainConfig.from_dict(data)


def _train_iteration(
    config: TrainConfig,
    root: Path,
    iteration: int,
    record: dict[str, Any],
    *,
    total_steps: int,
    progress: ProgressFn | None,
    should_cancel: CancelFn | None,
    lineage: dict[str, Any],
    device: str | None,
) -> TrainResult:
    from training.engine.checkpoint import latest_checkpoint

    inner = iteration_config(
        config, root, iteration, record["manifest"], record["initialized_from"]
    )
    trainer = Trainer(inner, lineage=lineage, device=device)
    latest = latest_checkpoint(inner.output_dir)
    if latest is not None:  # killed mid-iteration: continue exactly where it stopped
        trainer.restore(latest)
    offset = (iteration - 1) * config.steps

    def report(step: int, _total: int, loss: float) -> None:
        if progress is not None:
            progress(offset + step, total_steps, loss)

    return trainer.run(progress=report, should_cancel=should_cancel)


def _generate(
    config: TrainConfig,
    settings: StyleDropIterativeSettings,
    root: Path,
    iteration: int,
    checkpoint: str,
    device: str | None,
) -> list[dict[str, Any]]:
    from training.engine.generation import generate

    sampler = settings.sampler_settings(config)
    images = generate(
        settings.prompts,
        settings.seeds,
        sampler,
        checkpoint=root / checkpoint,
        device=device,
        batch_size=settings.generation_batch_size,
    )
    folder = root / iteration_dir_name(iteration) / GENERATIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for index, item in enumerate(images):  # prompt-major, as `generate` orders them
        prompt_index, sha = index // len(settings.seeds), item.metadata["sha256"]
        relative = f"{iteration_dir_name(iteration)}/{GENERATIONS_DIR}/{sha}.png"
        (root / relative).write_bytes(item.png_bytes())
        records.append(
            {
                "id": f"i{iteration}-p{prompt_index}-s{item.seed}",
                "prompt": item.prompt,
                "seed": item.seed,
                "iteration": iteration,
                "checkpoint": checkpoint,
                "image_sha256": sha,
                "image_path": relative,
                "full_prompt": item.metadata["full_prompt"],
                "sampler": item.metadata["sampler"],
            }
        )
    write_generations_index(root, iteration, records)
    return records


def _select(
    settings: StyleDropIterativeSettings,
    generations: list[Generation],
    reference_paths: list[str],
    *,
    clip: Any,
    human_feedback: HumanFeedback | None,
    iteration: int,
) -> FeedbackSelection:
    if settings.feedback == "human":
        try:
            return select_by_feedback(generations, "human", human_feedback=human_feedback)
        except FeedbackPending as pending:
            pending.iteration, pending.generations = iteration, generations
            raise
    if clip is None:
        from training.engine.metrics import load_metric_clip

        if settings.clip_weights is None and settings.clip_model != "tiny-clip":
            logger.warning(
                "styledrop.clip_weights is not set: %s has random weights, so clip feedback "
                "selects at random",
                settings.clip_model,
            )
        clip = load_metric_clip(settings.clip_model, settings.clip_weights)
    return select_by_feedback(
        generations,
        "clip",
        clip=clip,
        style_references=reference_paths,
        threshold=settings.threshold,
        top_k=settings.top_k,
    )


# ---- the driver ---------------------------------------------------------------------------------
def run_styledrop_iterative_training(
    config: TrainConfig | dict[str, Any],
    *,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    human_feedback: HumanFeedback | None = None,
    clip: Any = None,
    resume_from: str | Path | None = None,
    lineage: dict[str, Any] | None = None,
    resolver: Resolver | None = None,
    device: str | None = None,
) -> StyleDropIterativeResult:
    """Run (or continue) a `styledrop_iterative` config to its last iteration.

    `human_feedback(generations) -> {generation id: passed}` is required for feedback "human"
    and may raise `FeedbackPending`; `clip` is an optional preloaded metrics CLIP bundle (default:
    `load_metric_clip(styledrop.clip_model, styledrop.clip_weights)`). `resolver` opens reference
    images (once; they are copied into output_dir). `progress(step, total, loss)` counts steps
    over all iterations. The run always continues from `output_dir`'s state when there is one;
    `resume_from` may be None or "latest" (the same thing) for symmetry with `run_training`.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate()
    if config.recipe != RECIPE:
        raise ConfigError("recipe", f"expected {RECIPE!r}, got {config.recipe!r}")
    settings = StyleDropIterativeSettings.from_config(config)
    if resume_from not in (None, "latest"):
        raise ValueError(
            f"resume_from: {RECIPE} continues from the state in output_dir; pass None or 'latest', "
            f"got {resume_from!r}"
        )
    if settings.feedback == "human" and settings.iterations > 1 and human_feedback is None:
        raise ValueError(
            "human_feedback: styledrop.feedback is 'human', so a callback returning "
            "{generation id: passed} is required (the Django job passes one)"
        )
    started = time.perf_counter()
    root = Path(config.output_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    state = RunState(root, config)
    descriptor = settings.descriptor(config)
    if "references" not in state.data:
        state.data["references"] = copy_references(config, root, resolver)
        state.save()
    references = state.data["references"]["rows"]
    reference_paths = [str(root / ref["image_path"]) for ref in references]
    base_lineage = {
        **(lineage or {}),
        "styledrop_iterative": {
            "run_dir": str(root),
            "iterations": settings.iterations,
            "feedback": settings.feedback,
            "style_descriptor": descriptor,
            "references": {
                "manifest": config.datasets["references"].manifest,
                "sha256": config.datasets["references"].sha256,
                "version_id": config.datasets["references"].version_id,
            },
        },
    }
    status = "completed"
    run_info: dict[str, Any] = {}
    for k in range(1, settings.iterations + 1):
        record = state.iteration(k)
        if not record:
            if k > 1:  # written by iteration k-1's selection; absent only if the state is torn
                raise RuntimeError(f"{state.path}: iteration {k} has no training manifest")
            record.update(
                stage="prepared",
                manifest=write_train_manifest(root, 1, reference_rows(references, descriptor)),
                initialized_from=None,
            )
            state.save()
        if record["stage"] == "prepared":
            if should_cancel is not None and should_cancel():
                status = "cancelled"
                break
            iteration_lineage = {
                **base_lineage,
                "styledrop_iterative": {
                    **base_lineage["styledrop_iterative"],
                    "iteration": k,
                    "initialized_from": record["initialized_from"],
                    "train_manifest": record["manifest"]["path"],
                    "train_manifest_sha256": record["manifest"]["sha256"],
                },
            }
            result = _train_iteration(
                config,
                root,
                k,
                record,
                total_steps=config.steps * settings.iterations,
                progress=progress,
                should_cancel=should_cancel,
                lineage=iteration_lineage,
                device=device,
            )
            run_info = {"device": result.device, "mixed_precision": result.mixed_precision}
            if result.status == "cancelled":  # its checkpoint is saved; rerunning continues it
                record["partial"] = relative_result(root, result)
                state.save()
                status = "cancelled"
                break
            record.update(stage="trained", train=relative_result(root, result), **run_info)
            record.pop("partial", None)
            state.save()
        checkpoint = record["train"]["checkpoint_path"]
        if k == settings.iterations:
            break
        if record["stage"] == "trained":
            if should_cancel is not None and should_cancel():
                status = "cancelled"
                break
            record["generations"] = _generate(config, settings, root, k, checkpoint, device)
            record["stage"] = "generated"
            state.save()
        if record["stage"] == "generated":
            if should_cancel is not None and should_cancel():
                status = "cancelled"
                break
            generations = read_generations(root, k)
            selection = _select(
                settings,
                generations,
                reference_paths,
                clip=clip,
                human_feedback=human_feedback,
                iteration=k,
            )
            if len(selection.selected) < settings.min_selected:
                raise ValueError(
                    f"styledrop.min_selected: {len(selection.selected)} of {len(generations)} "
                    f"generations of iteration {k} passed {selection.mode} feedback, need at least "
                    f"{settings.min_selected} to train iteration {k + 1}"
                )
            stats = selection_stats(selection)
            selection_path = root / iteration_dir_name(k) / SELECTION_FILE
            write_json(
                selection_path,
                {"stats": stats, "decisions": [asdict(d) for d in selection.decisions]},
            )
            rows = generation_rows(selection.selected, descriptor)
            if settings.keep_references:
                rows = reference_rows(references, descriptor) + rows
            next_record = state.iteration(k + 1)
            next_record.clear()
            next_record.update(
                stage="prepared",
                manifest=write_train_manifest(root, k + 1, rows),
                initialized_from=checkpoint,
            )
            record.update(stage="selected", selection=stats)
            state.save()  # one write moves both iterations on: no torn state between them
    return build_result(config, settings, root, state, status, run_info, started)
