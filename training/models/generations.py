"""Generation batches: a checkpoint run over a prompt set × seeds with stated sampler settings."""

from __future__ import annotations

from django.db import models

from curation.models.base import TimeStampedModel


class GenerationBatch(TimeStampedModel):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    name = models.CharField(max_length=160)
    checkpoint = models.ForeignKey(
        "training.Checkpoint", on_delete=models.PROTECT, related_name="generation_batches"
    )
    prompt_set = models.ForeignKey(
        "curation.PromptSet", on_delete=models.PROTECT, related_name="generation_batches"
    )
    style_descriptor = models.ForeignKey(
        "curation.StyleDescriptor",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    seeds = models.JSONField(default=list)
    sampler = models.JSONField(
        default=dict, blank=True, help_text="scheduler, steps, guidance, size"
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True
    )
    job = models.ForeignKey(
        "curation.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    auto_round_kinds = models.JSONField(
        default=list,
        blank=True,
        help_text='Rounds to create when done, e.g. ["alignment", "style"].',
    )

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "generation batches"

    def __str__(self) -> str:
        return self.name


class Generation(models.Model):
    batch = models.ForeignKey(GenerationBatch, on_delete=models.CASCADE, related_name="generations")
    prompt = models.ForeignKey("curation.Prompt", on_delete=models.PROTECT, related_name="+")
    prompt_text = models.TextField(help_text="The prompt as sent to the model, descriptor applied.")
    seed = models.BigIntegerField()
    image = models.ForeignKey("curation.Image", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "prompt", "seed"], name="unique_generation")
        ]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.prompt_id}:{self.seed}"
