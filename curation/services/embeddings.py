"""Embedding spaces and their shards: plan the work, run one shard, enqueue one job per shard.

The Django side of `curation.retrieval.embedding`. A shard's exact id list is written to a plan
file beside it (`shard-00042.plan.json`) when it is planned, because the committed shard is
checked against the checksum of those ids: a job re-run later (retry, lost worker, another
machine sharing the folder) must embed exactly the ids that were planned, whatever happened to
the pool since. One folder per space: `<EMBEDDINGS_ROOT>/<space name>/`.

A pool grows by appending: `plan_embedding` plans only OK images that lie outside every shard's
id range, numbering new shards after the last one, so committed shards are never rewritten.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from curation.models import EmbeddingShard, EmbeddingSpace, Image, Job
from curation.services.jobs import enqueue_job
from curation.services.storage import read_bytes

DEFAULT_SHARD_SIZE = 10_000
_SPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
_bundles: dict[tuple[str, str], Any] = {}
_bundles_lock = threading.Lock()

ProgressFn = Callable[[int, int], None]


def embeddings_root() -> Path:
    return Path(getattr(settings, "EMBEDDINGS_ROOT", None) or Path(settings.VAR_DIR) / "embeddings")


def space_dir(space: EmbeddingSpace) -> Path:
    return embeddings_root() / space.name


def plan_path(space: EmbeddingSpace, shard_index: int) -> Path:
    return space_dir(space) / f"shard-{shard_index:05d}.plan.json"


def load_bundle(model_name: str, weights_path: str | None) -> Any:
    """The CLIP model for a space, loaded once per process (a worker runs many shard jobs)."""
    from curation.retrieval.clip_models import load_clip

    key = (model_name, weights_path or "")
    with _bundles_lock:
        if key not in _bundles:
            _bundles[key] = load_clip(model_name, weights_path or None)
        return _bundles[key]


def bundle_for(space: EmbeddingSpace) -> Any:
    """The space's model, refusing weights that changed since the space was made."""
    bundle = load_bundle(space.model_name, space.weights_path or None)
    if bundle.weights_sha256 != space.weights_sha256:
        raise ValueError(
            f"embedding space {space.name!r}: weights {space.weights_path or '(random init)'} now "
            f"hash to {bundle.weights_sha256[:12]}, the space was made with "
            f"{space.weights_sha256[:12]}; make a new space for new weights"
        )
    return bundle


def ensure_space(
    model_name: str, weights_path: str | Path | None = None, *, name: str | None = None
) -> EmbeddingSpace:
    """The EmbeddingSpace for this model + weights, created on first use.

    With `name`, that space is returned if it holds the same model and weights and refused
    otherwise; without, the space is found by its key or named `<model>-<checksum prefix>`.
    """
    if name is not None and not _SPACE_NAME.match(name):
        raise ValueError(
            f"space name {name!r}: use letters, digits, '.', '-' and '_' (it names a folder)"
        )
    weights = str(weights_path) if weights_path else None
    if weights and not weights.startswith("local-dir:"):
        weights = str(Path(weights).expanduser().resolve())
    bundle = load_bundle(model_name, weights)
    key = bundle.space_key()
    preprocessing = {"image_size": key["image_size"], "alpha": "composited on white"}
    same = EmbeddingSpace.objects.filter(
        model_name=key["model_name"], weights_sha256=key["weights_sha256"]
    )
    if name is None:
        existing = same.first()
        if existing is not None:
            return existing
        name = f"{model_name}-{key['weights_sha256'][:12]}"
    space, created = EmbeddingSpace.objects.get_or_create(
        name=name,
        defaults={
            "model_name": key["model_name"],
            "weights_path": weights or "",
            "weights_sha256": key["weights_sha256"],
            "preprocessing": preprocessing,
            "dim": key["embed_dim"],
        },
    )
    if not created and space.weights_sha256 != key["weights_sha256"]:
        raise ValueError(
            f"space {name!r} holds vectors of {space.model_name} ({space.weights_sha256[:12]}), "
            f"not of {model_name} ({key['weights_sha256'][:12]}); choose another --space name"
        )
    return space


def _embedded_ranges(space: EmbeddingSpace) -> list[tuple[int, int]]:
    return sorted(space.shards.values_list("first_image_id", "last_image_id"))


def _outside(ids: list[int], ranges: list[tuple[int, int]]) -> list[int]:
    import bisect

    starts = [first for first, _ in ranges]
    kept = []
    for image_id in ids:
        at = bisect.bisect_right(starts, image_id) - 1
        if at < 0 or image_id > ranges[at][1]:
            kept.append(image_id)
    return kept


def embeddable_images() -> Any:
    """Images worth embedding: accepted by ingest and with stored bytes."""
    return Image.objects.usable()


def plan_embedding(
    space: EmbeddingSpace, shard_size: int = DEFAULT_SHARD_SIZE
) -> list[EmbeddingShard]:
    """Create pending shards for OK images no shard covers yet; returns the new shards."""
    from curation.retrieval.embedding import plan_shards

    if shard_size < 1:
        raise ValueError(f"shard_size must be ≥ 1, got {shard_size}")
    with transaction.atomic():
        # Serialise planners of one space: two would number their shards alike.
        EmbeddingSpace.objects.select_for_update().filter(pk=space.pk).first()
        ids = list(embeddable_images().order_by("pk").values_list("pk", flat=True))
        todo = _outside(ids, _embedded_ranges(space))
        start = (space.shards.aggregate(n=Max("index"))["n"] or -1) + 1
        specs = plan_shards(todo, shard_size, start_index=start)
        folder = space_dir(space)
        folder.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            _write_plan(plan_path(space, spec.index), spec.to_json())
        return EmbeddingShard.objects.bulk_create(
            EmbeddingShard(
                space=space,
                index=spec.index,
                first_image_id=spec.ids[0],
                last_image_id=spec.ids[-1],
                status=EmbeddingShard.Status.PENDING,
            )
            for spec in specs
        )


def _write_plan(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_plan(shard: EmbeddingShard) -> Any:
    from curation.retrieval.embedding import ShardSpec

    path = plan_path(shard.space, shard.index)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: plan of {shard} is missing; the shard folder must be shared by all workers"
        )
    spec = ShardSpec.from_json(json.loads(path.read_text()))
    if spec.index != shard.index:
        raise ValueError(f"{path}: plan is for shard {spec.index}, not {shard.index}")
    return spec


def run_embed_shard(
    shard: EmbeddingShard,
    *,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    batch_size: int = 64,
    num_workers: int = 4,
) -> dict[str, Any]:
    """Embed one shard, or skip it when it is already done; the row records the outcome.

    Bytes come from media storage by key, read in the embedding pipeline's reader threads.
    An image that cannot be read or decoded is listed in the shard's `failures`.
    """
    from curation.retrieval.embedding import embed_shard, shard_paths

    shard = EmbeddingShard.objects.select_related("space").get(pk=shard.pk)
    space = shard.space
    sidecar = shard_paths(space_dir(space), f"shard-{shard.index:05d}")[0]
    if shard.status == EmbeddingShard.Status.DONE and sidecar.is_file():
        if progress:
            progress(shard.count, shard.count)
        return {"shard": shard.index, "count": shard.count, "skipped": True}
    spec = read_plan(shard)
    keys = dict(Image.objects.filter(pk__in=spec.ids).values_list("pk", "storage_key"))

    def load_image(image_id: int) -> bytes:
        key = keys.get(image_id)
        if not key:
            raise LookupError(f"image {image_id} has no stored bytes (deleted or not ingested)")
        return read_bytes(key)

    try:
        result = embed_shard(
            spec,
            bundle_for(space),
            load_image,
            space_dir(space),
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            should_cancel=should_cancel,
        )
    except Exception as exc:
        if type(exc).__name__ != "EmbeddingCancelled":
            EmbeddingShard.objects.filter(pk=shard.pk).update(
                status=EmbeddingShard.Status.FAILED,
                failures=[{"image_id": None, "reason": f"{type(exc).__name__}: {exc}"}],
            )
        raise
    failures = [{"image_id": f.image_id, "reason": f.reason} for f in result.failures]
    EmbeddingShard.objects.filter(pk=shard.pk).update(
        status=EmbeddingShard.Status.DONE,
        count=result.count,
        failures=failures,
        path=str(result.path),
    )
    return {
        "shard": shard.index,
        "count": result.count,
        "failures": len(failures),
        "skipped": result.skipped,
        "images_per_s": round(result.images_per_s, 1),
    }


def pending_shards(space: EmbeddingSpace) -> Any:
    return space.shards.exclude(status=EmbeddingShard.Status.DONE).order_by("index")


def enqueue_embedding(space: EmbeddingSpace, *, user: Any = None) -> list[Job]:
    """One `embed_shard` job per shard not done and not already queued or running."""
    jobs = []
    for shard in pending_shards(space):
        active = Job.objects.filter(
            kind="embed_shard",
            target_type=EmbeddingShard._meta.label_lower,
            target_id=shard.pk,
            status__in=Job.ACTIVE,
        ).exists()
        if not active:
            jobs.append(
                enqueue_job("embed_shard", params={"shard_id": shard.pk}, user=user, target=shard)
            )
    return jobs


def done_shard_paths(space: EmbeddingSpace) -> list[Path]:
    """Sidecars of the space's finished shards, in shard order."""
    from curation.retrieval.embedding import shard_paths

    folder = space_dir(space)
    return [
        shard_paths(folder, f"shard-{index:05d}")[0]
        for index in space.shards.filter(status=EmbeddingShard.Status.DONE)
        .order_by("index")
        .values_list("index", flat=True)
    ]
