"""Retrain rounds: the closed loop from curated versions to the next rating round.

A round is a chain of steps (train → evaluate → generate → push rounds → notify); each step is
one job, so a failed step is retried alone and finished steps are never redone.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from curation.models.base import TimeStampedModel


class RetrainRound(TimeStampedModel):
    class State(models.TextChoices):
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting for annotators"
        FAILED = "failed", "Failed"
        DONE = "done", "Done"

    STEPS = ("train", "evaluate", "generate", "push_rounds", "notify")

    name = models.CharField(max_length=160)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.RUNNING, db_index=True
    )
    recipe = models.CharField(max_length=32, default="style_tailoring")
    adapter = models.CharField(max_length=32, default="lora")
    hyperparameters = models.JSONField(default=dict, blank=True)
    base_checkpoint = models.ForeignKey(
        "training.Checkpoint",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The model being improved.",
    )
    dataset_versions = models.ManyToManyField(
        "curation.DatasetVersion", related_name="retrain_rounds"
    )
    prompt_set = models.ForeignKey(
        "curation.PromptSet",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Prompts for the next rating round.",
    )
    eval_prompt_set = models.ForeignKey(
        "curation.PromptSet",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Fixed evaluation prompts.",
    )
    style_descriptor = models.ForeignKey(
        "curation.StyleDescriptor",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    seeds = models.JSONField(default=list)
    training_run = models.ForeignKey(
        "training.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    checkpoint = models.ForeignKey(
        "training.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    generation_batch = models.ForeignKey(
        "training.GenerationBatch",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    report = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("start_retrainround", "Can start retrain rounds")]

    def __str__(self) -> str:
        return self.name

    def rating_rounds(self) -> models.QuerySet:
        """The Label Studio rounds this retrain round pushed (named after it)."""
        from curation.models import AnnotationRound

        return AnnotationRound.objects.filter(name__startswith=f"{self.name} · ")


class RoundStep(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    round = models.ForeignKey(RetrainRound, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=32)
    position = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    job = models.ForeignKey(
        "curation.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["round", "position"]
        constraints = [models.UniqueConstraint(fields=["round", "name"], name="unique_round_step")]

    def __str__(self) -> str:
        return f"{self.round_id}:{self.name} ({self.status})"

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
