"""Generation batches: a checkpoint over a prompt set × seeds, stored content-addressed.

`execute_generation_batch(batch, ctx)` is the one function that generates; the `generate` job
calls it and so does the retrain-round orchestrator. It is resumable: a Generation row is unique on
(batch, prompt, seed) and written right after its image is stored, so a retried job only draws the
pairs that are missing, and an image is a pure function of (weights, prompt, seed, settings).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from django.db import transaction

from curation.models import Job, Prompt, PromptSet, StyleDescriptor
from curation.services.jobs import JobCancelled, JobContext, enqueue_job
from training.models import Checkpoint, Generation, GenerationBatch
from training.services.checkpoints import is_base_model, is_tiny, is_toy_world
from training.services.devices import resolve_device
from training.services.feedback import store_generated_image

logger = logging.getLogger(__name__)

Status = GenerationBatch.Status
TINY_SAMPLER: dict[str, Any] = {
    "scheduler": "ddim",
    "steps": 4,
    "guidance_scale": 7.5,
    "resolution": 32,
}
MODEL_SAMPLER: dict[str, Any] = {
    "scheduler": "ddim",
    "steps": 25,
    "guidance_scale": 7.5,
    "resolution": 512,
}
# Sampler keys the platform reads itself; the rest are engine SamplerSettings fields.
PLATFORM_SAMPLER_KEYS = ("transparency_decoder", "batch_size")
ROUND_KINDS = ("alignment", "style")


class GenerationBatchError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def default_sampler(checkpoint: Checkpoint) -> dict[str, Any]:
    if is_toy_world(checkpoint):
        from training.engine.toy_world.evaluate import TOY_SAMPLER

        return dict(TOY_SAMPLER)
    return dict(TINY_SAMPLER if is_tiny(checkpoint) else MODEL_SAMPLER)


def sampler_settings(batch: GenerationBatch) -> tuple[Any, dict[str, Any]]:
    """(engine SamplerSettings, the full dict to record on the batch)."""
    from training.engine.generation import SamplerSettings

    values = {**default_sampler(batch.checkpoint), **(batch.sampler or {})}
    engine_values = {k: v for k, v in values.items() if k not in PLATFORM_SAMPLER_KEYS}
    if engine_values.get("style_suffix"):
        raise GenerationBatchError(
            "sampler.style_suffix", "use the batch's style descriptor instead"
        )
    try:
        settings = SamplerSettings.from_dict(engine_values)
    except (TypeError, ValueError) as error:
        raise GenerationBatchError("sampler", str(error)) from error
    if values.get("transparency_decoder") is not None:
        from training.services.transparency import decoder_folder

        decoder_folder(values["transparency_decoder"], batch.checkpoint)  # refuses a bad one
    return settings, {
        **settings.to_dict(),
        **{k: values[k] for k in PLATFORM_SAMPLER_KEYS if k in values},
    }


def styled_prompt(text: str, descriptor: StyleDescriptor | None) -> str:
    """The prompt as sent to the model: the descriptor's prefix/suffix, each added at most once."""
    if descriptor is None or not (descriptor.prefix.strip() or descriptor.suffix.strip()):
        return " ".join(text.split())
    from curation.prompts.descriptors import StyleDescriptor as Descriptor
    from curation.prompts.descriptors import apply_descriptor

    return apply_descriptor(
        text, Descriptor(descriptor.name, prefix=descriptor.prefix, suffix=descriptor.suffix)
    )


def _validate_seeds(seeds: list[int]) -> list[int]:
    if not isinstance(seeds, list | tuple) or not seeds:
        raise GenerationBatchError("seeds", "must be a non-empty list of integers")
    cleaned = []
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise GenerationBatchError("seeds", f"must be integers >= 0, got {seed!r}")
        cleaned.append(seed)
    if len(set(cleaned)) != len(cleaned):
        raise GenerationBatchError("seeds", f"must be distinct, got {cleaned}")
    return cleaned


def create_generation_batch(
    checkpoint: Checkpoint,
    prompt_set: PromptSet,
    seeds: list[int],
    sampler: dict[str, Any] | None = None,
    style_descriptor: StyleDescriptor | None = None,
    auto_round_kinds: list[str] | None = None,
    *,
    name: str = "",
) -> GenerationBatch:
    """A draft batch; sampler settings are validated now and stored complete when it runs."""
    seeds = _validate_seeds(list(seeds))
    if not prompt_set.prompts.exists():
        raise GenerationBatchError("prompt_set", f"{prompt_set} has no prompts")
    kinds = list(auto_round_kinds or [])
    unknown = [k for k in kinds if k not in ROUND_KINDS]
    if unknown:
        raise GenerationBatchError(
            "auto_round_kinds", f"{unknown} not in {list(ROUND_KINDS)} (pairwise needs two batches)"
        )
    batch = GenerationBatch(
        name=name or f"{checkpoint.name} × {prompt_set} × {len(seeds)} seeds",
        checkpoint=checkpoint,
        prompt_set=prompt_set,
        seeds=seeds,
        sampler=dict(sampler or {}),
        style_descriptor=style_descriptor,
        auto_round_kinds=kinds,
    )
    sampler_settings(batch)  # refuse bad settings before anything is saved
    batch.name = batch.name[:160]
    batch.save()
    return batch


def _pipeline(batch: GenerationBatch, recorded: dict[str, Any], device: str) -> Any:
    from training.engine.generation import build_pipeline

    checkpoint = batch.checkpoint
    decoder = recorded.get("transparency_decoder")
    if decoder is not None:  # a decoder Checkpoint id (recorded as such) or a folder
        from training.services.transparency import decoder_folder

        decoder = decoder_folder(decoder, checkpoint)
    if decoder is None:
        base = Path(checkpoint.path if is_base_model(checkpoint) else checkpoint.base_model)
        if (base / "vae_alpha").is_dir():  # a trained RGBA decoder lives beside the base model
            decoder = str(base / "vae_alpha")
            recorded["transparency_decoder"] = decoder
    if is_base_model(checkpoint):
        return build_pipeline(
            base_model=checkpoint.path, device=device, transparency_decoder=decoder
        )
    return build_pipeline(checkpoint=checkpoint.path, device=device, transparency_decoder=decoder)


def _set_status(batch: GenerationBatch, status: str, **fields: Any) -> None:
    batch.status = status
    for name, value in fields.items():
        setattr(batch, name, value)
    GenerationBatch.objects.filter(pk=batch.pk).update(status=status, **fields)


def execute_generation_batch(batch: GenerationBatch, ctx: JobContext) -> dict[str, Any]:
    """Generate every missing (prompt, seed) of `batch` inside the calling job.

    Returns counts; creates the batch's automatic rounds at the end. A cancel stops between
    prompts (everything stored so far stays) and raises JobCancelled.
    """
    from training.engine.generation import generate

    batch = GenerationBatch.objects.select_related(
        "checkpoint", "prompt_set", "style_descriptor"
    ).get(pk=batch.pk)
    settings, recorded = sampler_settings(batch)
    seeds = _validate_seeds(list(batch.seeds))
    prompts = list(Prompt.objects.filter(prompt_set=batch.prompt_set).order_by("pk"))
    done = set(batch.generations.values_list("prompt_id", "seed"))
    todo = [(p, [s for s in seeds if (p.pk, s) not in done]) for p in prompts]
    todo = [(p, missing) for p, missing in todo if missing]
    total = len(prompts) * len(seeds)
    count = len(done)
    _set_status(batch, Status.RUNNING, job=ctx.job)
    ctx.progress(count, total, f"{count} of {total} images")
    created = 0
    if todo:
        device = resolve_device(ctx.log)
        pipeline = _pipeline(batch, recorded, device)
        GenerationBatch.objects.filter(pk=batch.pk).update(sampler=recorded)
        batch.sampler = recorded
        ctx.log(
            f"batch {batch.pk}: {sum(len(m) for _, m in todo)} images to draw on {device} "
            f"({count} already stored)"
        )
        for prompt, missing in todo:
            if ctx.should_cancel():
                _set_status(batch, Status.CANCELLED)
                raise JobCancelled(f"generation batch {batch.pk} cancelled after {count} images")
            text = styled_prompt(prompt.text, batch.style_descriptor)
            images = generate(
                [text],
                missing,
                settings,
                pipeline=pipeline,
                batch_size=int(recorded.get("batch_size", 4)),
            )
            for item in images:
                with transaction.atomic():
                    image = store_generated_image(
                        item.png_bytes(),
                        caption=text,
                        origin=f"generation batch {batch.pk} prompt {prompt.pk} seed {item.seed}",
                        pil_image=item.image,
                    )
                    _, made = Generation.objects.get_or_create(
                        batch=batch,
                        prompt=prompt,
                        seed=item.seed,
                        defaults={"prompt_text": text, "image": image},
                    )
                created += int(made)
                count += int(made)
            # A cancel is acted on at the top of the next prompt, after marking the batch.
            with contextlib.suppress(JobCancelled):
                ctx.progress(count, total, f"{count} of {total} images")
    else:
        GenerationBatch.objects.filter(pk=batch.pk).update(sampler=recorded)
    rounds = create_auto_rounds(batch, ctx)
    _set_status(batch, Status.SUCCEEDED)
    return {
        "generation_batch": batch.pk,
        "created": created,
        "generations": count,
        "rounds": rounds,
    }


def create_auto_rounds(batch: GenerationBatch, ctx: JobContext | None = None) -> dict[str, int]:
    """The rounds `auto_round_kinds` asks for, each created once per batch and kind."""
    from curation.services.rounds.create import create_round

    made: dict[str, int] = {}
    user = batch.job.created_by if batch.job_id and batch.job else None
    for kind in batch.auto_round_kinds or []:
        existing = batch.rounds.filter(kind=kind).first()
        if existing is not None:
            made[kind] = existing.pk
            continue
        round_ = create_round(
            name=f"{batch.name} — {kind}"[:160], kind=kind, generation_batch=batch, user=user
        )
        made[kind] = round_.pk
        if ctx is not None:
            ctx.log(f"{kind} round {round_.pk} created from batch {batch.pk}")
    return made


class BatchNotStartable(ValueError):
    pass


def enqueue_generation(batch: GenerationBatch, user: Any = None) -> Job:
    """Start (or continue: only missing images are drawn) `batch` as a `generate` job on gpu."""
    batch = GenerationBatch.objects.get(pk=batch.pk)
    if batch.job_id and Job.objects.filter(pk=batch.job_id, status__in=Job.ACTIVE).exists():
        raise BatchNotStartable(
            f"generation batch {batch.pk} already has an active job #{batch.job_id}"
        )
    sampler_settings(batch)
    job = enqueue_job(
        "generate", params={"batch_id": batch.pk}, queue="gpu", user=user, target=batch
    )
    _set_status(batch, Status.QUEUED, job=job)
    return job
