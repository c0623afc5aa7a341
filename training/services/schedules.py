"""Scheduled retraining: start a run when a newer frozen version of its datasets exists.

A Schedule row with job_kind `retrain_if_new_version` and params {"template_run": <run id>} runs
nightly (or on any cron). Each tick looks up the newest frozen version of every dataset the
template run trained on; if no run with the same recipe has trained on exactly those versions
yet, it creates one (template's recipe, adapter, base checkpoint and hyperparameters) and enqueues
it on the gpu queue. A tick with nothing new does nothing, so the schedule can run as often as
wanted, and a failed run is not retried every night (resume it from the admin instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curation.models import DatasetVersion, Schedule
from curation.services.schedules import save_schedule
from training.models import TrainingRun
from training.services.runs.inputs import create_training_run
from training.services.runs.jobs import enqueue_training

JOB_KIND = "retrain_if_new_version"


def newest_frozen_versions(template: TrainingRun) -> list[DatasetVersion]:
    newest = []
    for version in template.dataset_versions.select_related("dataset").order_by("pk"):
        latest = (
            DatasetVersion.objects.filter(
                dataset=version.dataset, state=DatasetVersion.State.FROZEN
            )
            .select_related("dataset")
            .order_by("-number")
            .first()
        )
        newest.append(latest or version)
    return newest


def _already_trained(recipe: str, versions: list[DatasetVersion]) -> TrainingRun | None:
    wanted = {v.pk for v in versions}
    candidates = TrainingRun.objects.filter(recipe=recipe, dataset_versions__in=wanted).distinct()
    for run in candidates.prefetch_related("dataset_versions"):
        if {v.pk for v in run.dataset_versions.all()} == wanted:
            return run
    return None


def retrain_if_new_version(
    params: dict[str, Any], log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = log or (lambda _line: None)
    if "template_run" not in params:
        raise ValueError("params.template_run: the id of the run to repeat is required")
    template = TrainingRun.objects.select_related("base_checkpoint", "created_by").get(
        pk=params["template_run"]
    )
    versions = newest_frozen_versions(template)
    existing = _already_trained(template.recipe, versions)
    if existing is not None:
        say(f"nothing new: run {existing.pk} already trained on {', '.join(map(str, versions))}")
        return {"started": None, "already_trained_by": existing.pk}
    run = create_training_run(
        recipe=template.recipe,
        adapter=template.adapter,
        dataset_versions=versions,
        base_checkpoint=template.base_checkpoint,
        hyperparameters=template.hyperparameters,
        name=f"{template.name} — retrain on {', '.join(map(str, versions))}"[:160],
        user=template.created_by,
    )
    job = enqueue_training(run, template.created_by)
    say(f"new versions {', '.join(map(str, versions))}: started run {run.pk} (job {job.pk})")
    return {"started": run.pk, "job": job.pk, "versions": [v.pk for v in versions]}


def nightly_retrain_schedule(
    template: TrainingRun, *, cron: str = "0 3 * * *", name: str = ""
) -> Schedule:
    """The Schedule that runs `retrain_if_new_version` for `template` (03:00 UTC by default)."""
    schedule = Schedule.objects.filter(name=name or f"nightly retrain of run {template.pk}").first()
    schedule = schedule or Schedule(name=name or f"nightly retrain of run {template.pk}")
    schedule.cron = cron
    schedule.job_kind = JOB_KIND
    schedule.queue = "default"
    schedule.params = {"template_run": template.pk}
    schedule.enabled = True
    return save_schedule(schedule)
