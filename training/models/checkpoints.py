"""Checkpoints with lineage back to the runs, dataset versions and recipe that made them."""

from __future__ import annotations

from django.db import models

from curation.models.base import TimeStampedModel


class Checkpoint(TimeStampedModel):
    name = models.CharField(max_length=160, unique=True)
    path = models.CharField(
        max_length=1024, help_text="Local folder (diffusers layout or adapter)."
    )
    base_model = models.CharField(max_length=1024, blank=True)
    adapter = models.CharField(max_length=32, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    training_run = models.ForeignKey(
        "training.TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="checkpoints",
    )
    dataset_versions = models.ManyToManyField(
        "curation.DatasetVersion", blank=True, related_name="checkpoints"
    )
    config = models.JSONField(default=dict, blank=True)
    lineage = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    step = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name
