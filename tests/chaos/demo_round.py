"""The demo round with every long stage a job run by the workers, then what it left, as JSON.

python -m tests.chaos.demo_round OUT.json STATUS_FILE

Run by the chaos test against a private database (DATABASE_URL) while workers serve the jobs.
The stages are the demo's (curation.services.demo_domain, training.services.demo_training,
curation.services.demo_rounds), with the long ones enqueued instead of run in this process:
ingest → embed shards → index → recipe run → freeze → train → generate → push (job) → ratings by
the demo script → curate (job) → retrain round (its steps are jobs). STATUS_FILE always holds
the stage being waited for, so the controller can time its restarts to land inside a job.
The driver itself survives a database restart while it waits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import django

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = float(os.environ.get("CHAOS_STAGE_TIMEOUT", "900"))
# As small as the stages allow on a CPU: the point is the interruptions, not the model.
TRAIN_STEPS = 4
# Far more attempts than one kill per stage explains: a job failing for a reason of its own
# stops the round with its error instead of retrying until the stage times out.
MAX_ATTEMPTS_SEEN = 8
# A style row needs passed and a mean of at least this many stars; the default (4) leaves a
# six-image demo batch one or two rows, too few to be sure of any on every CPU's images.
STYLE_RULES = {"min_rating": 3.0}


# (stage, when it began): the report says how long each stage took.
_STAGES: list[tuple[str, float]] = []


def _status(path: Path, text: str) -> None:
    stage = text.split(":")[-1]
    if not _STAGES or _STAGES[-1][0] != stage:
        _STAGES.append((stage, time.monotonic()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _retry_db(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a read that may meet a database restarting; reconnect and try again."""
    from django.db import DatabaseError, connection

    deadline = time.monotonic() + 120
    while True:
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            if time.monotonic() > deadline:
                raise
            connection.close()
            time.sleep(1)


def _check_jobs(stage: str, job_ids: list[int]) -> list[dict[str, Any]]:
    from curation.models import Job

    rows = list(Job.objects.filter(pk__in=job_ids).values("pk", "status", "attempt"))
    for row in rows:
        if row["status"] in (Job.Status.FAILED, Job.Status.LOST) or (
            row["attempt"] >= MAX_ATTEMPTS_SEEN and row["status"] == Job.Status.RETRYING
        ):
            job = Job.objects.get(pk=row["pk"])
            raise SystemExit(
                f"{stage}: job {job.pk} {job.status} at attempt {job.attempt}: {job.error[-2000:]}"
            )
    return rows


def wait_jobs(status: Path, stage: str, job_ids: list[int]) -> None:
    from curation.models import Job

    _status(status, f"waiting:{stage}")
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        rows = _retry_db(lambda: _check_jobs(stage, job_ids))
        if rows and all(r["status"] == Job.Status.SUCCEEDED for r in rows):
            _status(status, f"done:{stage}")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{stage}: jobs {job_ids} not done in {WAIT_SECONDS} s: {rows}")
        time.sleep(0.5)


def run(status: Path) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from curation.models import AnnotationRound, Job, PromptSet, RecipeScore
    from curation.services.demo import ensure_demo_logins, load_demo_fixtures
    from curation.services.demo_domain import (
        DEMO_ACCEPT_LIMIT,
        DEMO_DATASET,
        DEMO_LF_OVERRIDES,
        DEMO_RECIPE,
        DEMO_SHARD_SIZE,
        DEMO_SPACE,
    )
    from curation.services.demo_rounds import demo_annotate
    from curation.services.embeddings import enqueue_embedding, ensure_space, plan_embedding
    from curation.services.indexes import enqueue_build_index
    from curation.services.ingest import enqueue_ingest
    from curation.services.jobs import enqueue_job
    from curation.services.recipes import (
        ensure_heuristics_recipe,
        heuristics_lf_configs,
        start_recipe_run,
    )
    from curation.services.review import freeze_domain_version
    from curation.services.rounds.create import create_round
    from training.models import Checkpoint, RetrainRound, RoundStep
    from training.services.checkpoints import ensure_tiny_base_checkpoint
    from training.services.demo_training import DEMO_SAMPLER
    from training.services.generation import create_generation_batch, enqueue_generation
    from training.services.loops import start_retrain_round
    from training.services.runs.inputs import create_training_run
    from training.services.runs.jobs import enqueue_training

    _status(status, "setup")  # the test migrated the database before starting the workers
    load_demo_fixtures(ROOT / "fixtures" / "demo.json")
    # Every round shares the session's Label Studio: all but the first find the annotators'
    # accounts there already and take them over, as the demo does.
    ensure_demo_logins(ROOT / "fixtures" / "demo.json")
    users = get_user_model().objects
    lead = users.get(username="lead")

    batch = enqueue_ingest([ROOT / "fixtures" / "pool"], "demo-pool", user=lead)
    wait_jobs(status, "ingest", [batch.job_id])

    space = ensure_space("tiny-clip", None, name=DEMO_SPACE)
    plan_embedding(space, DEMO_SHARD_SIZE)
    wait_jobs(status, "embed", [j.pk for j in enqueue_embedding(space, user=lead)])
    wait_jobs(status, "index", [enqueue_build_index(space, user=lead).pk])

    recipe = ensure_heuristics_recipe(
        DEMO_RECIPE,
        labelling_functions=[
            {**lf, **DEMO_LF_OVERRIDES.get(lf["kind"], {})} for lf in heuristics_lf_configs()
        ],
        threshold=0.5,
    )
    recipe_run = start_recipe_run(recipe, user=lead, space=space)
    wait_jobs(status, "recipe", [recipe_run.job_id])

    _status(status, "freeze")
    chosen = list(
        RecipeScore.objects.filter(run=recipe_run, score__gte=recipe.threshold)
        .order_by("-score", "image__sha256")
        .values_list("pk", flat=True)[:DEMO_ACCEPT_LIMIT]
    )
    RecipeScore.objects.filter(pk__in=chosen).update(decision=RecipeScore.Decision.ACCEPTED)
    domain = freeze_domain_version(
        recipe_run,
        dataset_name=DEMO_DATASET,
        reason="chaos test",
        user=lead,
        default_caption="a sticker",
    )

    base = ensure_tiny_base_checkpoint()
    train = create_training_run(
        recipe="domain",
        adapter="lora",
        dataset_versions=[domain],
        base_checkpoint=base,
        hyperparameters={"steps": TRAIN_STEPS, "checkpoint_every": 2},
        name="chaos: domain LoRA",
        user=lead,
    )
    train_job = enqueue_training(train, lead)
    wait_jobs(status, "train", [train_job.pk])
    checkpoint = Checkpoint.objects.get(pk=Job.objects.get(pk=train_job.pk).result["checkpoint"])

    generation_set = PromptSet.objects.get(name="demo-generation", version=1)
    evaluation_set = PromptSet.objects.get(name="demo-evaluation", version=1)
    generations = create_generation_batch(
        checkpoint, generation_set, [0], sampler=dict(DEMO_SAMPLER), name="chaos: generate"
    )
    wait_jobs(status, "generate", [enqueue_generation(generations, lead).pk])

    annotators = list(users.filter(groups__name="annotator").order_by("username"))
    rounds = [
        create_round(
            name=f"chaos · {kind}",
            kind=kind,
            generation_batch=generations,
            overlap=3,
            gold_rate=0.0,
            user=lead,
        )
        for kind in (AnnotationRound.Kind.ALIGNMENT, AnnotationRound.Kind.STYLE)
    ]
    pushes = [enqueue_job("labelstudio.push", params={"round_id": r.pk}, user=lead) for r in rounds]
    wait_jobs(status, "push", [j.pk for j in pushes])
    _status(status, "ratings")
    for round_ in rounds:
        demo_annotate(round_, annotators, user=lead, curate=False)
    curates = [
        enqueue_job(
            "labelstudio.curate",
            params={"round_id": r.pk, **({"rules": STYLE_RULES} if r.kind == "style" else {})},
            user=lead,
        )
        for r in rounds
    ]
    wait_jobs(status, "curate", [j.pk for j in curates])
    curated = [AnnotationRound.objects.get(pk=r.pk).result_version for r in rounds]
    retrain = start_retrain_round(
        base_checkpoint=checkpoint,
        dataset_versions=curated,
        prompt_set=generation_set,
        eval_prompt_set=evaluation_set,
        recipe="style_tailoring",
        adapter="lora",
        hyperparameters={"steps": 2, "checkpoint_every": 1, "resolution": 32, "t_s": 500},
        seeds=[0],
        user=lead,
        name="chaos retrain round",
    )
    _status(status, "waiting:retrain")
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        retrain = _retry_db(RetrainRound.objects.get, pk=retrain.pk)
        steps = _retry_db(
            lambda pk: list(RoundStep.objects.filter(round=pk).values_list("job", flat=True)),
            retrain.pk,
        )
        _retry_db(_check_jobs, "retrain", [job for job in steps if job])
        if retrain.state in (RetrainRound.State.WAITING, RetrainRound.State.DONE):
            break
        if retrain.state == RetrainRound.State.FAILED:
            failed = retrain.steps.filter(job__status=Job.Status.FAILED).select_related("job")
            raise SystemExit(f"retrain round failed: {[(s.name, s.job.error) for s in failed]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"retrain round not done: {retrain.state}")
        time.sleep(0.5)
    _status(status, "report")
    return _report()


def _report() -> dict[str, Any]:
    """Row counts of every platform table and the frozen manifests' checksums."""
    from django.apps import apps

    from curation.models import DatasetVersion, Job
    from training.models import Generation

    counts = {}
    for app in ("auth", "curation", "training"):
        for model in apps.get_app_config(app).get_models():
            counts[model._meta.label] = model.objects.count()
    frozen = sorted(
        (v.dataset.name, v.number, v.checksum, v.row_count)
        for v in DatasetVersion.objects.filter(state=DatasetVersion.State.FROZEN).select_related(
            "dataset"
        )
    )
    jobs = list(Job.objects.order_by("pk").values("pk", "kind", "status", "attempt"))
    # What the trained model drew: equal only if every resumed training run equals an
    # uninterrupted one, bit for bit.
    generated = sorted(Generation.objects.values_list("image__sha256", flat=True))
    stages = [(name, round(end - begin, 1)) for (name, begin), (_, end) in pairwise(_STAGES)]
    return {
        "counts": counts,
        "frozen": frozen,
        "generated": generated,
        "jobs": jobs,
        "stages": stages,
    }


def main() -> None:
    out, status = Path(sys.argv[1]), Path(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    django.setup()
    report = run(status)
    out.write_text(json.dumps(report, indent=1, default=str))
    _status(status, "finished")


if __name__ == "__main__":
    main()
