"""Prompt sets for generation and evaluation, and named style descriptors."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from curation.models.base import TimeStampedModel


class FrozenPromptSetError(ValidationError):
    pass


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
        permissions = [("freeze_promptset", "Can freeze and split prompt sets")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    # A frozen set is what a generation batch or an evaluation ran on: changing it afterwards would
    # silently rewrite history, so the guard sits on the model, not only in the admin. Analysis
    # results (stats, near_duplicate_of) are derived and written with queryset.update().
    def save(self, *args, **kwargs) -> None:
        if self.pk:
            stored = PromptSet.objects.filter(pk=self.pk).values_list("frozen", flat=True).first()
            if stored:
                raise FrozenPromptSetError(f"prompt set {self} is frozen and cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.frozen:
            raise FrozenPromptSetError(f"prompt set {self} is frozen and cannot be deleted.")
        return super().delete(*args, **kwargs)


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

    def save(self, *args, **kwargs) -> None:
        self._check_draft()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._check_draft()
        return super().delete(*args, **kwargs)

    def _check_draft(self) -> None:
        frozen = (
            PromptSet.objects.filter(pk=self.prompt_set_id).values_list("frozen", flat=True).first()
        )
        if frozen:
            raise FrozenPromptSetError("prompts of a frozen prompt set cannot change.")
