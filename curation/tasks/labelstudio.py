"""Label Studio jobs (queue default): push a round, process a webhook event, reconcile, curate.

Each loads its rows by id and calls a service; all are safe to retry.
"""

from __future__ import annotations

from curation.models import AnnotationRound, WebhookEvent
from curation.services.jobs import JobContext, Param, job_handler


@job_handler("labelstudio.push")
def push_job(ctx: JobContext) -> dict:
    from curation.services.annotators import sync_annotators
    from curation.services.rounds.push import push_round

    round_ = AnnotationRound.objects.get(pk=ctx.params["round_id"])
    ctx.progress(0, 2, "syncing annotator accounts")
    report = sync_annotators()
    for line in report.errors:
        ctx.log(f"annotator sync: {line}")
    ctx.progress(1, 2, f"pushing {round_.tasks.count()} tasks")
    result = push_round(round_, log=ctx.log)
    ctx.progress(2, 2, f"{result['created']} tasks created")
    result["annotator_accounts"] = len(report.accounts)
    return result


@job_handler("labelstudio.refresh_media")
def refresh_media_job(ctx: JobContext) -> dict:
    from curation.services.round_media import refresh_media_links

    round_ = AnnotationRound.objects.get(pk=ctx.params["round_id"])
    return refresh_media_links(round_, log=ctx.log)


@job_handler("labelstudio.webhook")
def webhook_job(ctx: JobContext) -> dict:
    from curation.services.sync import process_webhook_event

    event = WebhookEvent.objects.get(pk=ctx.params["event_id"])
    if event.processed_at is not None and not ctx.params.get("force"):
        return {"event": event.pk, "already_processed": True}
    return process_webhook_event(event)


@job_handler(
    "labelstudio.reconcile",
    params={
        "round_id": Param(int, help="one round; all active rounds when absent"),
        "close": Param(bool, help="close that round after reconciling it"),
        "full_deletion_scan": Param(bool, help="look for annotations deleted in Label Studio"),
        "full": Param(bool, help="read the whole project, not only what changed"),
    },
)
def reconcile_job(ctx: JobContext) -> dict:
    """One round (`round_id`, optionally `close`), or every active round plus stale events."""
    from curation.services.aggregation import compute_round_quality
    from curation.services.curation import close_round
    from curation.services.sync import active_rounds, reconcile_round, replay_pending_events

    full_scan = bool(ctx.params.get("full_deletion_scan", True))
    full = bool(ctx.params.get("full", False))
    if ctx.params.get("round_id"):
        rounds = [AnnotationRound.objects.get(pk=ctx.params["round_id"])]
        replayed = 0
    else:
        replayed = replay_pending_events()
        rounds = active_rounds()
    results = []
    for index, round_ in enumerate(rounds):
        ctx.progress(index, len(rounds), f"round {round_.pk}")
        try:
            result = reconcile_round(round_, full_deletion_scan=full_scan, full=full)
        except Exception as exc:  # one unreachable project must not stop the others
            if len(rounds) == 1:
                raise
            ctx.log(f"round {round_.pk}: reconcile failed: {exc}")
            results.append({"round": round_.pk, "error": str(exc)})
            continue
        if any(result[k] for k in ("created", "edited", "deleted", "restored")):
            compute_round_quality(round_)
        for line in result["errors"][:20]:
            ctx.log(f"round {round_.pk}: {line}")
        results.append(result)
    if ctx.params.get("round_id") and ctx.params.get("close"):
        round_ = rounds[0]
        close_round(round_)
    ctx.progress(len(rounds), len(rounds), "done")
    return {"rounds": results, "replayed_events": replayed}


@job_handler("labelstudio.curate")
def curate_job(ctx: JobContext) -> dict:
    """Curate once per job: the version commits with the job's record of it (fenced), so an
    attempt whose worker died after that commit, or a superseded one, never curates again."""
    from curation.models import DatasetVersion
    from curation.services.curation import curate_round

    if ctx.state.get("dataset_version"):
        version = DatasetVersion.objects.get(pk=ctx.state["dataset_version"])
        ctx.log(f"version {version} was curated by an earlier attempt of this job")
    else:
        round_ = AnnotationRound.objects.get(pk=ctx.params["round_id"])
        version = curate_round(
            round_,
            ctx.job.created_by,
            rules=ctx.params.get("rules"),
            on_frozen=lambda v: ctx.save_state(dataset_version=v.pk),
        )
    return {"dataset_version": version.pk, "rows": version.row_count, "checksum": version.checksum}


@job_handler("labelstudio.sync_annotators")
def sync_annotators_job(ctx: JobContext) -> dict:
    from curation.services.annotators import sync_annotators

    report = sync_annotators()
    for line in report.errors:
        ctx.log(line)
    return {
        "accounts": len(report.accounts),
        "created": report.created,
        "reactivated": report.reactivated,
        "deactivated": report.deactivated,
        "errors": report.errors[:100],
    }
