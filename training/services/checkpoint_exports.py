"""Exporting a checkpoint from the platform: the admin's request, the `export_checkpoint` job
(gpu queue: it loads the weights), and the zip a browser downloads behind a signed URL.

- `diffusers`: a LoRA checkpoint becomes `pytorch_lora_weights.safetensors` (what
  `pipeline.load_lora_weights(DIR)` reads); a `full` checkpoint a complete diffusers folder.
- `kohya`: `lora_kohya.safetensors` with the `lora_unet_…` keys A1111 and ComfyUI read.

An export is a pure function of the checkpoint (immutable once recorded), the format and the
weights (EMA or raw) and the base folder it reads, so asking again for one that finished from
the same base folder and is still stored reuses it;
`replace=True` writes it again (the folder and the zip are replaced, not duplicated). What cannot
be exported is refused before a job is queued, with the reason: a base model, an adapter the
format cannot hold, a checkpoint or base folder that moved or was deleted. A refusal found only
when the job runs fails the job with that message, without a retry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.files.storage import default_storage
from django.utils.text import slugify

from curation.models import Job
from curation.services.jobs import JobContext, JobRefused, enqueue_job
from training.models import Checkpoint
from training.selectors import checkpoint_exports as selectors
from training.services.checkpoints import is_base_model

JOB_KIND = selectors.JOB_KIND
FORMATS = ("diffusers", "kohya")
FORMAT_LABELS = {"diffusers": "diffusers", "kohya": "kohya (A1111/ComfyUI)"}


class CheckpointExportRefused(ValueError):
    """This checkpoint cannot be exported as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ExportRequest:
    """What asking for an export did: queued a new job, or found one running or finished."""

    job: Job
    outcome: str  # "queued", "running" or "reused"


def variant_name(fmt: str, use_ema: bool) -> str:
    return fmt if use_ema else f"{fmt}-raw"


def export_dir(checkpoint: Checkpoint, fmt: str, use_ema: bool) -> Path:
    from curation.services.exports import exports_root

    return (
        exports_root() / "checkpoints" / f"checkpoint-{checkpoint.pk}" / variant_name(fmt, use_ema)
    )


def archive_root(checkpoint: Checkpoint, fmt: str, use_ema: bool) -> str:
    """The one folder a downloaded zip unpacks to, e.g. `run-3-checkpoint-000010-kohya/`."""
    name = slugify(checkpoint.name) or f"checkpoint-{checkpoint.pk}"
    return f"{name}-{variant_name(fmt, use_ema)}"


def download_key(checkpoint: Checkpoint, fmt: str, use_ema: bool) -> str:
    root = archive_root(checkpoint, fmt, use_ema)
    return f"exports/checkpoints/checkpoint-{checkpoint.pk}/{root}.zip"


def has_ema(checkpoint: Checkpoint) -> bool:
    return (Path(checkpoint.path) / "ema" / "ema.safetensors").is_file()


def check_checkpoint_exportable(
    checkpoint: Checkpoint, fmt: str, *, base_model: str = ""
) -> dict[str, Any]:
    """The engine's plan for this export (family, adapter, base folder, what it writes), or
    CheckpointExportRefused naming what is wrong, without loading any weights."""
    from training.engine.errors import BaseModelError, ConfigError
    from training.engine.export import LORA_ADAPTERS, ExportError, check_exportable

    if fmt not in FORMATS:
        raise CheckpointExportRefused(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if is_base_model(checkpoint):
        raise CheckpointExportRefused(
            f"{checkpoint.name} is a base model: its folder {checkpoint.path} already is a "
            "diffusers folder; export a trained checkpoint"
        )
    if checkpoint.adapter not in ("full", *LORA_ADAPTERS):
        raise CheckpointExportRefused(
            f"{checkpoint.name}: adapter {checkpoint.adapter!r} has no format other tools load; "
            f"only LoRA-type adapters ({', '.join(LORA_ADAPTERS)}) and full checkpoints export"
        )
    try:
        return check_exportable(checkpoint.path, fmt, base_model=base_model or None)
    except BaseModelError as error:
        raise CheckpointExportRefused(
            f"{checkpoint.name}: {error} — the base model folder it was trained on moved or was "
            "deleted; give its new place as the base model folder (export with options)"
            if "no such folder" in str(error)
            else f"{checkpoint.name}: {error}"
        ) from error
    except (ExportError, ConfigError) as error:
        raise CheckpointExportRefused(f"{checkpoint.name}: {error}") from error


def request_export(
    checkpoint: Checkpoint,
    fmt: str,
    *,
    use_ema: bool = True,
    replace: bool = False,
    base_model: str = "",
    user: Any = None,
) -> ExportRequest:
    """Queue an export of `checkpoint` on the gpu queue, unless the same one is running or
    finished (then that job is returned, outcome "running" or "reused"; `replace` queues a new
    one over a finished export). Refusals raise CheckpointExportRefused."""
    plan = check_checkpoint_exportable(checkpoint, fmt, base_model=base_model)
    # Without EMA weights the two variants hold the same tensors: one export serves both.
    use_ema = use_ema or not has_ema(checkpoint)
    running = selectors.active_export(checkpoint, fmt, use_ema)
    if running is not None:
        return ExportRequest(running, "running")
    if not replace:
        done = selectors.finished_export(checkpoint, fmt, use_ema)
        # An export made from another base folder (the base moved, or the lead points at a
        # different copy) is not this one: a full checkpoint's folder copies the base's parts.
        if done is not None and (done.result or {}).get("base_model") == plan["base_model"]:
            return ExportRequest(done, "reused")
    params = {"checkpoint_id": checkpoint.pk, "format": fmt, "use_ema": use_ema}
    if base_model:
        params["base_model"] = base_model
    job = enqueue_job(JOB_KIND, params=params, queue="gpu", user=user, target=checkpoint)
    return ExportRequest(job, "queued")


def execute_export(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Run one export inside its job: check, write the files, zip them into media storage;
    returns what was written (tensor counts, sizes) and the zip's storage key."""
    from curation.services.storage import store_folder_as_zip
    from training.engine.errors import BaseModelError, ConfigError
    from training.engine.export import EXPORT_INFO, ExportError, export_checkpoint

    checkpoint = Checkpoint.objects.filter(pk=params["checkpoint_id"]).first()
    if checkpoint is None:
        raise JobRefused(f"checkpoint {params['checkpoint_id']} no longer exists")
    fmt, use_ema = params["format"], bool(params.get("use_ema", True))
    base_model = params.get("base_model") or ""
    try:
        plan = check_checkpoint_exportable(checkpoint, fmt, base_model=base_model)
    except CheckpointExportRefused as error:
        raise JobRefused(str(error)) from error
    out = export_dir(checkpoint, fmt, use_ema)
    ctx.progress(0, 3, f"loading {checkpoint.name} ({plan['family']}, {plan['adapter']})")
    ctx.log(
        f"exporting {checkpoint.name} as {fmt} ({'EMA' if use_ema else 'raw'} weights) to {out}"
    )
    try:
        written = export_checkpoint(
            checkpoint.path, fmt, out, base_model=base_model or None, use_ema=use_ema
        )
    except (ExportError, BaseModelError, ConfigError) as error:
        raise JobRefused(f"{checkpoint.name}: {error}") from error
    info = json.loads((out / EXPORT_INFO).read_text())
    if not info.get("tensors_written"):
        raise JobRefused(f"{checkpoint.name}: the {fmt} export wrote no tensors ({out})")
    ctx.check_cancelled()
    ctx.progress(2, 3, f"zipping {info['tensors_written']} tensors for download")
    key = store_folder_as_zip(
        out, download_key(checkpoint, fmt, use_ema), archive_root(checkpoint, fmt, use_ema)
    )
    result = {
        "checkpoint": checkpoint.pk,
        "format": fmt,
        "use_ema": use_ema,
        "ema": bool(info.get("ema")),
        "family": info.get("family"),
        "adapter": info.get("adapter"),
        "base_model": info.get("base_model"),
        "writes": plan["writes"],
        "file": str(written.relative_to(out)) if written != out else "",
        "out_dir": str(out),
        "tensors_written": info["tensors_written"],
        "lora_modules": info.get("lora_modules", 0),
        "bytes_written": info.get("bytes_written", 0),
        "download": key,
        "zip_bytes": default_storage.size(key),
    }
    if "rank" in info:
        result.update(rank=info["rank"], alpha=info["alpha"])
    ctx.progress(3, 3, f"{fmt}: {result['tensors_written']} tensors written")
    ctx.log(
        f"wrote {result['tensors_written']} tensors ({result['lora_modules']} LoRA modules), "
        f"zip {result['zip_bytes']} bytes"
    )
    return result
