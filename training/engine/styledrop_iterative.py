"""The `styledrop_iterative` recipe: StyleDrop's train → generate → select → train-again loop,
driven on the engine's own training loop, generation and CLIP metrics, without Django.

Each iteration is an ordinary engine run (a `domain` run over that iteration's training
manifest, so its checkpoint loads and generates like any other); iteration k > 1 starts from
iteration k-1's adapter. Between iterations the previous model generates `prompts` x `seeds`,
feedback selects (CLIP score, or a human callback), and the selection is written as the next
iteration's manifest, each row naming the iteration and generation it came from.

Everything lives under `output_dir` with paths relative to it, so the folder can move:

    styledrop_state.json              what is done: per iteration its stage and results
    references/<sha>.<ext>            the reference images, copied once (the resolver may be remote)
    iteration-01/train_manifest.parquet   references (+ descriptor) — what iteration 1 trains on
    iteration-01/checkpoints/step-…/  iteration 1's engine checkpoints
    iteration-01/generations/         iteration 1's model's images + generations.jsonl
    iteration-01/selection.json       feedback decisions and stats for those images
    iteration-02/train_manifest.parquet   selected generations (+ references) — iteration 2's data
    …

State is written atomically after every stage (prepared, trained, generated, selected), so a
killed run started again with the same config continues where it stopped: finished iterations are
not retrained, generations are not redrawn (annotators judge exactly those ids), and an iteration
killed mid-training resumes from its latest checkpoint. Human feedback that is not in yet raises
`FeedbackPending` after the state is saved; the caller runs the recipe again later.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.engine.adapters.styledrop import (
    FeedbackPending,
    FeedbackSelection,
    Generation,
    HumanFeedback,
    select_by_feedback,
    with_style_descriptor,
)
from training.engine.config import ConfigError, TrainConfig
from training.engine.data import ImageCaptionDataset, Resolver, write_manifest
from training.engine.loop import Trainer
from training.engine.run_types import (
    RESUME_MAY_CHANGE,
    CancelFn,
    DataError,
    ProgressFn,
    TrainResult,
)
from training.engine.styledrop_settings import StyleDropIterativeSettings

logger = logging.getLogger(__name__)

__all__ = [
    "FeedbackPending",
    "IterationResult",
    "StyleDropIterativeResult",
    "initialize_adapter_from",
    "run_styledrop_iterative_training",
]

RECIPE = "styledrop_iterative"
STATE_FILE = "styledrop_state.json"
REFERENCES_DIR = "references"
TRAIN_MANIFEST = "train_manifest.parquet"
GENERATIONS_DIR = "generations"
GENERATIONS_INDEX = "generations.jsonl"
SELECTION_FILE = "selection.json"
# Besides what any resumed run may change, a finished run may be given more iterations.
DRIVER_MAY_CHANGE = RESUME_MAY_CHANGE | {"styledrop.iterations"}
STAGES = ("prepared", "trained", "generated", "selected")


def iteration_dir_name(iteration: int) -> str:
    return f"iteration-{iteration:02d}"


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


# ---- state --------------------------------------------------------------------------------------
def _settings_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(StyleDropIterativeSettings.from_config(config))


def _fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The config with the fields a continued run may change removed, settings normalised (so
    an omitted default equals the same value written out)."""
    data = config.to_dict()
    data["styledrop"] = _settings_dict(config)
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if name == "styledrop":
            flat.update({f"styledrop.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return {k: v for k, v in flat.items() if k not in DRIVER_MAY_CHANGE}


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)  # atomic: a kill never leaves half a state file


class _State:
    def __init__(self, root: Path, config: TrainConfig) -> None:
        self.root = root
        self.path = root / STATE_FILE
        fingerprint = _fingerprint(config)
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            saved = data.get("fingerprint", {})
            for name in sorted(set(saved) | set(fingerprint)):
                if saved.get(name) != fingerprint.get(name):
                    raise ConfigError(
                        name,
                        f"differs from the {RECIPE} run being continued in {root} "
                        f"({saved.get(name)!r} there, {fingerprint.get(name)!r} here); "
                        "use a new output_dir for a different run",
                    )
            self.data = data
        else:
            self.data = {"recipe": RECIPE, "fingerprint": fingerprint, "iterations": {}}

    def save(self) -> None:
        _write_json(self.path, self.data)

    def iteration(self, k: int) -> dict[str, Any]:
        return self.data["iterations"].setdefault(str(k), {})


# ---- references ---------------------------------------------------------------------------------
def _image_bytes(source: Any) -> bytes:
    from PIL import Image

    if isinstance(source, bytes):
        return source
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(source).read_bytes()


def _copy_references(config: TrainConfig, root: Path, resolver: Resolver | None) -> dict[str, Any]:
    """Copy every readable reference image under `root`, so later iterations and generation need
    neither the resolver nor the original storage; unreadable ones are skipped and reported."""
    from PIL import Image

    spec = config.datasets["references"]
    dataset = ImageCaptionDataset.from_manifest(
        spec.manifest,
        spec.sha256,
        config.resolution,
        split=spec.split,
        resolver=resolver,
        image_root=spec.image_root,
    )
    folder = root / REFERENCES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for row in dataset.rows:
        try:
            data = _image_bytes(dataset.source(row))
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                extension = (image.format or "png").lower()
        except Exception as error:  # one bad reference must not stop the others
            where = row.image_path or "via resolver"
            logger.warning(
                "datasets.references: skipping %s (%s): %s", row.image_sha256, where, error
            )
            skipped.append(row.image_sha256)
            continue
        relative = f"{REFERENCES_DIR}/{row.image_sha256}.{extension}"
        (root / relative).write_bytes(data)
        rows.append(
            {
                "image_sha256": row.image_sha256,
                "caption": row.caption,
                "weight": row.weight,
                "image_path": relative,
            }
        )
    if not rows:
        raise DataError(
            f"datasets.references: {spec.manifest}: not one of {len(dataset.rows)} reference "
            "images could be read"
        )
    return {"rows": rows, "skipped": skipped}


# ---- manifests ----------------------------------------------------------------------------------
def _reference_rows(references: list[dict[str, Any]], descriptor: str) -> list[dict[str, Any]]:
    return [
        {
            "image_sha256": ref["image_sha256"],
            "caption": with_style_descriptor(ref["caption"], descriptor),
            "prompt": ref["caption"],
            "weight": float(ref["weight"]),
            "split": "train",
            "image_path": ref["image_path"],
            "origin": "reference",
            "source_iteration": None,
            "generation_id": None,
            "seed": None,
        }
        for ref in references
    ]


def _generation_rows(selected: list[Generation], descriptor: str) -> list[dict[str, Any]]:
    return [
        {
            "image_sha256": g.metadata["image_sha256"],
            "caption": with_style_descriptor(g.prompt, descriptor),
            "prompt": g.prompt,
            "weight": 1.0,
            "split": "train",
            "image_path": g.metadata["image_path"],
            "origin": "generation",
            "source_iteration": int(g.metadata["iteration"]),
            "generation_id": g.id,
            "seed": g.seed,
        }
        for g in selected
    ]


def _write_train_manifest(root: Path, iteration: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    relative = f"{iteration_dir_name(iteration)}/{TRAIN_MANIFEST}"
    sha256 = write_manifest(root / relative, rows)
    origins = Counter(row["origin"] for row in rows)
    return {
        "path": relative,
        "sha256": sha256,
        "trained_on": {
            "references": origins.get("reference", 0),
            "generations": origins.get("generation", 0),
        },
    }


# ---- training -----------------------------------------------------------------------------------
def iteration_config(
    config: TrainConfig, root: Path, iteration: int, manifest: dict[str, Any]
) -> TrainConfig:
    """The plain engine run of one iteration: the outer config on that iteration's manifest."""
    data = config.to_dict()
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


def initialize_adapter_from(trainer: Any, checkpoint: str | Path) -> None:
    """Start `trainer` from another checkpoint's adapter weights (not its optimizer or step).

    The adapter loads in place into the parameters the optimizer already holds; an EMA is
    rebuilt around the loaded values so it does not pull back towards the fresh init.
    """
    trainer.adapter.load(trainer.unwrapped_denoiser(), Path(checkpoint) / "adapter")
    if trainer.ema is not None:
        from diffusers.training_utils import EMAModel

        trainer.ema = EMAModel(trainer.trainable, decay=trainer.config.ema_decay)
        trainer.ema.to(trainer.device)


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

    inner = iteration_config(config, root, iteration, record["manifest"])
    trainer = Trainer(inner, lineage=lineage, device=device)
    if record["initialized_from"] is not None:
        initialize_adapter_from(trainer, root / record["initialized_from"])
    latest = latest_checkpoint(inner.output_dir)
    if latest is not None:  # killed mid-iteration: continue exactly where it stopped
        trainer.restore(latest)
    offset = (iteration - 1) * config.steps

    def report(step: int, _total: int, loss: float) -> None:
        if progress is not None:
            progress(offset + step, total_steps, loss)

    return trainer.run(progress=report, should_cancel=should_cancel)


# ---- generation and selection -------------------------------------------------------------------
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
    index_path = folder / GENERATIONS_INDEX
    temporary = index_path.with_name(f"{index_path.name}.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(temporary, index_path)
    return records


def _read_generations(root: Path, iteration: int) -> list[Generation]:
    index = root / iteration_dir_name(iteration) / GENERATIONS_DIR / GENERATIONS_INDEX
    generations = []
    for line in index.read_text().splitlines():
        record = json.loads(line)
        generations.append(
            Generation(
                record["id"],
                record["prompt"],
                str(root / record["image_path"]),
                seed=record["seed"],
                metadata=record,
            )
        )
    return generations


def selection_stats(selection: FeedbackSelection) -> dict[str, Any]:
    """What the Django side shows per iteration: counts, ids, reasons and mean scores."""

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None and not math.isnan(v)]
        return sum(kept) / len(kept) if kept else None

    decisions = selection.decisions
    chosen = [d for d in decisions if d.selected]
    return {
        "mode": selection.mode,
        "generated": len(decisions),
        "selected": len(chosen),
        "rejected": len(decisions) - len(chosen),
        "selected_ids": [g.id for g in selection.selected],
        "rejection_reasons": dict(Counter(d.reason for d in decisions if not d.selected)),
        "mean_score": mean([d.score for d in decisions]),
        "mean_score_selected": mean([d.score for d in chosen]),
        "mean_text_score": mean([d.text_score for d in decisions]),
        "mean_style_score": mean([d.style_score for d in decisions]),
    }


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
    state = _State(root, config)
    descriptor = settings.descriptor(config)
    if "references" not in state.data:
        state.data["references"] = _copy_references(config, root, resolver)
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
                manifest=_write_train_manifest(root, 1, _reference_rows(references, descriptor)),
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
                record["partial"] = _relative_result(root, result)
                state.save()
                status = "cancelled"
                break
            record.update(stage="trained", train=_relative_result(root, result), **run_info)
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
            generations = _read_generations(root, k)
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
            _write_json(
                selection_path,
                {"stats": stats, "decisions": [asdict(d) for d in selection.decisions]},
            )
            rows = _generation_rows(selection.selected, descriptor)
            if settings.keep_references:
                rows = _reference_rows(references, descriptor) + rows
            next_record = state.iteration(k + 1)
            next_record.clear()
            next_record.update(
                stage="prepared",
                manifest=_write_train_manifest(root, k + 1, rows),
                initialized_from=checkpoint,
            )
            record.update(stage="selected", selection=stats)
            state.save()  # one write moves both iterations on: no torn state between them
    return _result(config, settings, root, state, status, run_info, started)


def _relative_result(root: Path, result: TrainResult) -> dict[str, Any]:
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


def _result(
    config: TrainConfig,
    settings: StyleDropIterativeSettings,
    root: Path,
    state: _State,
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
