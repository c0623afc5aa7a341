"""Job handlers `embed_shard` and `build_index` (queue cpu): load rows by id, call a service."""

from __future__ import annotations

from curation.models import EmbeddingShard, EmbeddingSpace
from curation.services.jobs import JobCancelled, JobContext, job_handler


@job_handler("embed_shard", queue="cpu")
def embed_shard_job(ctx: JobContext) -> dict:
    """One shard per job, so many workers share a space; a finished shard is skipped."""
    from curation.services.embeddings import run_embed_shard

    shard = EmbeddingShard.objects.get(pk=ctx.params["shard_id"])
    try:
        result = run_embed_shard(
            shard,
            progress=lambda done, total: ctx.progress(done, total, f"shard {shard.index}"),
            should_cancel=ctx.should_cancel,
        )
    except Exception as exc:
        if type(exc).__name__ == "EmbeddingCancelled":
            raise JobCancelled(str(exc)) from exc
        raise
    ctx.log(
        f"shard {result['shard']}: "
        + ("already done, skipped" if result["skipped"] else f"{result['count']} embedded")
    )
    return result


@job_handler("build_index", queue="cpu")
def build_index_job(ctx: JobContext) -> dict:
    from curation.services.indexes import build_vector_index

    space = EmbeddingSpace.objects.get(pk=ctx.params["space_id"])
    ctx.progress(0, 1, f"building index of {space.name}")
    index = build_vector_index(space, spec=ctx.params.get("spec"))
    ctx.log(
        f"v{index.version} {index.index_type}: {index.vector_count} vectors, "
        f"recall@{index.recall_k} {index.recall_at_k:.3f}"
    )
    ctx.progress(1, 1)
    return {
        "index": index.pk,
        "version": index.version,
        "index_type": index.index_type,
        "vector_count": index.vector_count,
        "recall_at_k": index.recall_at_k,
    }
