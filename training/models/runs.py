"""Training runs: a recipe and adapter applied to exact, frozen dataset versions."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from curation.models.base import TimeStampedModel


class TrainingRun(TimeStampedModel):
    class Recipe(models.TextChoices):
        DOMAIN = "domain", "Domain fine-tuning"
        SEQUENTIAL = "sequential", "Sequential (alignment then style)"
        STYLE_TAILORING = "style_tailoring", "Style Tailoring (joint, split timesteps)"
        STYLEDROP_ITERATIVE = "styledrop_iterative", "StyleDrop with iterative feedback"

    class Adapter(models.TextChoices):
        FULL = "full", "Full UNet"
        LORA = "lora", "LoRA"
        STYLEDROP = "styledrop", "StyleDrop adapter"
        KV_LORA = "kv_lora", "FineStyle K/V adapter"
        STYLEINJECT = "styleinject", "StyleInject routed multi-branch LoRA"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting for feedback"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    name = models.CharField(max_length=160)
    recipe = models.CharField(max_length=32, choices=Recipe.choices, default=Recipe.STYLE_TAILORING)
    adapter = models.CharField(max_length=32, choices=Adapter.choices, default=Adapter.LORA)
    base_checkpoint = models.ForeignKey(
        "training.Checkpoint", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    dataset_versions = models.ManyToManyField(
        "curation.DatasetVersion", blank=True, related_name="training_runs"
    )
    hyperparameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True
    )
    job = models.ForeignKey(
        "curation.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    loss_curve = models.JSONField(default=list, blank=True)
    # Validation previews imported from the engine's previews/index.json, in step order:
    # [{"step", "grid_key" (media storage), "prompts", "seeds"}] (services/previews.py)
    previews = models.JSONField(default=list, blank=True)
    output_dir = models.CharField(max_length=1024, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("start_trainingrun", "Can start training runs")]

    def __str__(self) -> str:
        return f"{self.name} ({self.recipe}/{self.adapter})"
