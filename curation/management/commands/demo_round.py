"""Run one tiny Style Tailoring round end to end on this machine (the README's demo).

toy world (built once, cached under var/toy-world) → ingest its sample pool → weak-supervision
recipe → domain version → domain training of the toy world's pre-trained base → generation →
Label Studio alignment and style rounds (annotated by the clearly labelled demo script) →
curated versions → Style Tailoring retrain round (train → evaluate → generate → push the next
rounds, run by the worker) → a small trade-off sweep on the round's inputs → report.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from config.console_logging import console_for_verbosity
from curation.models import AnnotationRound
from training.models import RetrainRound, TradeoffSweep

DEMO_ROUND = "demo retrain round"
# The demo's sweep: sequential and Style Tailoring at two t_s, a few full-UNet steps each.
DEMO_SWEEP = {
    "t_s_values": [300, 700],
    "mix_ratios": [0.5],
    "adapter": "full",
    "hyperparameters": {"steps": 16, "batch_size": 8, "learning_rate": 5e-4},
}
# The domain stage fine-tunes the whole toy UNet: a rank-4 LoRA for a few dozen steps leaves its
# generations photographs (toy CLIP style pass rate 0 of 12 at 40 and 120 steps), 40 full-UNet
# steps make half of them stickers, which is what the style round has to curate from.
DOMAIN_TRAINING = {"adapter": "full", "steps": 40, "learning_rate": 5e-4}
TINY_HYPERPARAMETERS = {
    "steps": 12,
    "resolution": 32,
    "batch_size": 4,
    "checkpoint_every": 6,
    "t_s": 500,
}


class Command(BaseCommand):
    help = "Run the demo round: every stage of the loop on tiny models, on this CPU."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--timeout", type=float, default=1800, help="Seconds to wait for the worker."
        )
        parser.add_argument(
            "--no-wait", action="store_true", help="Start the retrain round and return."
        )

    def say(self, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"demo: {text}"))

    def handle(self, *args, **options) -> None:
        # One line per stage here; the services' and libraries' INFO lines with -v 2 or LOG_FILE.
        console_for_verbosity(options["verbosity"])
        from curation.services.demo import ensure_demo_logins
        from curation.services.demo_domain import TOY_SOURCE, demo_domain_dataset
        from curation.services.demo_rounds import demo_annotate, demo_rating_rounds
        from curation.services.ingest import demo_ingest_pool
        from curation.services.sync import ensure_default_schedules
        from training.services.demo_training import demo_generate, demo_train_domain
        from training.services.loops import start_retrain_round
        from training.services.sweeps import start_sweep_for_round
        from training.services.toy_world import ensure_toy_world

        world = ensure_toy_world(log=lambda line: self.say(f"  {line}"))
        if world.clip_weights != settings.EVAL_CLIP_WEIGHTS:
            self.stdout.write(
                self.style.WARNING(
                    f"demo: EVAL_CLIP_WEIGHTS is {settings.EVAL_CLIP_WEIGHTS or 'empty'}, not the "
                    f"toy CLIP ({world.clip_weights}): the report will say its scores are not a "
                    "measurement (scripts/demo sets it)"
                )
            )
        logins = ensure_demo_logins(Path(settings.BASE_DIR) / "fixtures" / "demo.json")
        self.say(f"annotators log in to Label Studio at {settings.LABEL_STUDIO_URL}/user/login/:")
        for email, password in logins:
            self.say(f"  {email} / {password}")
        existing = RetrainRound.objects.filter(name=DEMO_ROUND).first()
        if existing is None:
            User = get_user_model()
            lead = User.objects.get(username="lead")
            annotators = list(User.objects.filter(groups__name="annotator").order_by("username"))
            ensure_default_schedules()

            self.say(f"ingesting the toy world's sample pool ({world.pool})")
            batch = demo_ingest_pool(world.pool, TOY_SOURCE)
            self.say(
                f"  {batch.ingested} ingested, {batch.duplicates} duplicates, {batch.near_duplicates} near-duplicates, {batch.quarantined} quarantined"
            )
            self.say(
                "embedding, indexing, running the sticker recipe and freezing the domain version"
            )
            domain = demo_domain_dataset(lead, pool=world.pool, clip_weights=world.clip_weights)
            self.say(f"  {domain} frozen with {domain.row_count} images")
            self.say("training the toy world's pre-trained base on the domain version")
            checkpoint = demo_train_domain(domain, lead, base=world.base, **DOMAIN_TRAINING)
            self.say(f"  checkpoint {checkpoint}")
            generation_set, evaluation_set = world.generation_prompts, world.evaluation_prompts
            generations = demo_generate(checkpoint, generation_set, lead)
            self.say(f"  {generations.generations.count()} generations")
            self.say(
                "pushing alignment and style rounds to Label Studio; the DEMO SCRIPT annotates them"
            )
            curated = []
            for rating_round in demo_rating_rounds(generations, lead):
                summary = demo_annotate(rating_round, annotators, user=lead)
                rating_round.refresh_from_db()
                if rating_round.result_version is None:
                    raise CommandError(
                        f"{rating_round.name}: nothing curated ({summary.get('curate_error')}); "
                        f"the demo's annotators rated by {summary['rated_by']}"
                    )
                curated.append(rating_round.result_version)
                self.say(
                    f"  {rating_round.name}: {summary['annotations_created']} demo ratings by "
                    f"{summary['rated_by']}, curated {rating_round.result_version} "
                    f"({summary.get('rows')} rows)"
                )
            self.say("starting the Style Tailoring retrain round (the worker runs its steps)")
            existing = start_retrain_round(
                base_checkpoint=checkpoint,
                dataset_versions=curated,
                prompt_set=generation_set,
                eval_prompt_set=evaluation_set,
                recipe="style_tailoring",
                adapter="lora",
                hyperparameters=TINY_HYPERPARAMETERS,
                seeds=[0, 1],
                user=lead,
                name=DEMO_ROUND,
            )
        if options["no_wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        self._wait(existing, deadline)
        sweep = existing.tradeoff_sweeps.order_by("-id").first()
        if sweep is None:
            self.say("starting a small trade-off sweep on the round's inputs (the worker runs it)")
            sweep = start_sweep_for_round(existing, settings=DEMO_SWEEP, user=existing.created_by)
        self._wait_sweep(sweep, deadline)
        base = settings.PLATFORM_PUBLIC_URL.rstrip("/")
        self.say(
            f"report (with the sweep's plane): {base}{reverse('round-report', args=[existing.pk])}"
        )

    def _wait_sweep(self, sweep: TradeoffSweep, deadline: float) -> None:
        last = ""
        while True:
            sweep.refresh_from_db()
            job = sweep.job
            message = job.progress_message if job else ""
            line = f"{sweep.status}: {message}" if message else str(sweep.status)
            if line != last:
                self.say(f"  sweep {line}")
                last = line
            if sweep.status == TradeoffSweep.Status.SUCCEEDED:
                report = sweep.report
                self.say(
                    f"  Pareto front: {', '.join(report['pareto_front'])}; best run "
                    f"{report['headline']['best_run']}; Style Tailoring dominates sequential: "
                    f"{'yes' if report['style_tailoring_dominates_sequential'] else 'no'}"
                )
                return
            if sweep.status in (TradeoffSweep.Status.FAILED, TradeoffSweep.Status.CANCELLED):
                raise CommandError(f"demo sweep {sweep.status}: {sweep.error or ''}")
            if time.monotonic() > deadline:
                raise CommandError("demo sweep did not finish in time: is a worker running?")
            time.sleep(2)

    def _wait(self, round_: RetrainRound, deadline: float) -> None:
        last = ""
        while True:
            round_.refresh_from_db()
            steps = " → ".join(f"{s.name}:{s.status}" for s in round_.steps.all())
            if steps != last:
                self.say(f"  {steps}")
                last = steps
            if round_.state in (RetrainRound.State.WAITING, RetrainRound.State.DONE):
                break
            if (
                round_.state == RetrainRound.State.FAILED
                and not round_.steps.filter(
                    job__status__in=["queued", "running", "retrying"]
                ).exists()
            ):
                failed = round_.steps.filter(status="failed").first()
                raise CommandError(
                    f"demo round failed at step {failed.name if failed else '?'}: {failed.error if failed else ''}"
                )
            if time.monotonic() > deadline:
                raise CommandError(
                    "demo round did not finish in time: is a worker running? (manage.py worker)"
                )
            time.sleep(2)
        base = settings.PLATFORM_PUBLIC_URL.rstrip("/")
        next_rounds = AnnotationRound.objects.filter(name__startswith=f"{round_.name} · ")
        self.say(f"round finished: report at {base}{reverse('round-report', args=[round_.pk])}")
        for rating_round in next_rounds:
            self.say(
                f"  next rating round waiting for annotators: {rating_round.name} (Label Studio project {rating_round.labelstudio_project_id})"
            )
