"""Prompt sets for generation and evaluation, and named style descriptors."""

from __future__ import annotations

from django.db import models

from curation.models.base import TimeStampedModel


class StyleDescriptor(TimeStampedModel):
    """A named prefix/suffix such as "sticker, die-cut, white border": data, not code."""

    name = models.SlugField(max_length=80, unique=True)
    prefix = models.CharField(max_length=255, blank=True)
    suffix = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PromptSet(TimeStampedModel):
    class Purpose(models.TextChoices):
        GENERATION = "generation", "Generation"
        EVALUATION = "evaluation", "Evaluation"

    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(default=1)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.GENERATION)
    frozen = models.BooleanField(default=False)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    description = models.TextField(blank=True)
    stats = models.JSONField(default=dict, blank=True, help_text="Diversity and near-duplicates.")

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="unique_promptset_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Prompt(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField()
    category = models.CharField(max_length=80, blank=True, db_index=True)
    subject = models.CharField(max_length=120, blank=True)
    tags = models.JSONField(default=list, blank=True)
    slots = models.JSONField(default=dict, blank=True, help_text="Template values that made it.")
    near_duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text[:80]
