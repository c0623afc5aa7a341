"""Trade-off sweeps: the paper's comparison of sequential fine-tuning and Style Tailoring.

From one domain checkpoint and one frozen alignment and style version, a sweep trains the
sequential recipe and Style Tailoring at several t_s and mix ratios with the same budget, and
evaluates every arm and the prompt-engineered base on the same prompts and seeds. Each arm is a
TrainingRun and a GenerationBatch of its own, recorded in `arms` as they are made, so a retried
job continues where the last attempt stopped.
"""

from __future__ import annotations

from django.conf import settings as django_settings
from django.db import models

from curation.models.base import TimeStampedModel


class TradeoffSweep(TimeStampedModel):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    name = models.CharField(max_length=160)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    base_checkpoint = models.ForeignKey(
        "training.Checkpoint",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The domain checkpoint every arm starts from.",
    )
    dataset_versions = models.ManyToManyField(
        "curation.DatasetVersion",
        related_name="tradeoff_sweeps",
        help_text="One frozen alignment and one frozen style version.",
    )
    eval_prompt_set = models.ForeignKey(
        "curation.PromptSet", on_delete=models.PROTECT, related_name="+"
    )
    style_descriptor = models.ForeignKey(
        "curation.StyleDescriptor",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The style words the prompt-engineered base adds to each prompt.",
    )
    retrain_round = models.ForeignKey(
        "training.RetrainRound",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tradeoff_sweeps",
        help_text="The round whose report shows this sweep's plane.",
    )
    seeds = models.JSONField(default=list)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="t_s_values, mix_ratios, adapter and the training hyperparameters every arm "
        "shares (steps, learning_rate, batch_size, ...).",
    )
    arms = models.JSONField(
        default=dict, blank=True, help_text="Per arm: its training run, checkpoint and batch."
    )
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey(
        "curation.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("start_tradeoffsweep", "Can start trade-off sweeps")]

    def __str__(self) -> str:
        return self.name
