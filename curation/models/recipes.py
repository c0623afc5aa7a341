"""Weak-supervision recipes (text queries, exemplars, labelling functions) and their runs."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from curation.models.base import TimeStampedModel
from curation.weak.recipe_fields import recipe_field_errors


class Recipe(TimeStampedModel):
    """Editable in the admin; `clean()` checks the JSON fields so errors name the field."""

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    text_queries = models.JSONField(
        default=list, blank=True, help_text='[{"text": ..., "weight": 1.0}]'
    )
    negative_queries = models.JSONField(default=list, blank=True)
    exemplars = models.ManyToManyField("curation.Image", blank=True, related_name="+")
    labelling_functions = models.JSONField(default=list, blank=True)
    threshold = models.FloatField(default=0.5)
    top_k = models.PositiveIntegerField(default=1000)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = recipe_field_errors(self)
        if errors:
            raise ValidationError(errors)


class RecipeRun(TimeStampedModel):
    recipe = models.ForeignKey(Recipe, on_delete=models.CASCADE, related_name="runs")
    index = models.ForeignKey(
        "curation.VectorIndex", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    config = models.JSONField(default=dict, blank=True, help_text="The recipe as it ran.")
    stats = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey("curation.Job", null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.recipe} run #{self.pk}"


class RecipeScore(models.Model):
    """Score and weak label of one image in one run; the review grid reads these."""

    class Decision(models.TextChoices):
        UNREVIEWED = "unreviewed", "Unreviewed"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    run = models.ForeignKey(RecipeRun, on_delete=models.CASCADE, related_name="scores")
    image = models.ForeignKey("curation.Image", on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    probability = models.FloatField(default=0.0)
    weak_label = models.SmallIntegerField(default=-1)
    lf_votes = models.JSONField(default=dict, blank=True)
    decision = models.CharField(
        max_length=16, choices=Decision.choices, default=Decision.UNREVIEWED, db_index=True
    )
    certainty = models.FloatField(
        default=1.0, help_text="|2p − 1| of P(sticker): 0 is least sure, reviewed next."
    )

    class Meta:
        ordering = ["-score"]
        constraints = [models.UniqueConstraint(fields=["run", "image"], name="unique_score")]
        indexes = [
            # The grid's keyset pages: ranked (score desc, id) and review-next (certainty, id).
            models.Index(fields=["run", "-score", "id"], name="score_rank"),
            models.Index(fields=["run", "certainty", "id"], name="score_review_next"),
            models.Index(fields=["run", "decision"], name="score_decision"),
        ]

    def __str__(self) -> str:
        return f"{self.image} {self.score:.3f}"


class RecipeDecision(TimeStampedModel):
    """A data lead's accept or reject of one image for one recipe, kept across its runs.

    Made in the review grid or imported (`manage.py review_decisions`); every later run of the
    recipe uses them as gold for its label model and to train its decision classifier.
    """

    class Decision(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    class Origin(models.TextChoices):
        GRID = "grid", "Review grid"
        IMPORT = "import", "Imported"

    recipe = models.ForeignKey(Recipe, on_delete=models.CASCADE, related_name="decisions")
    image = models.ForeignKey("curation.Image", on_delete=models.CASCADE, related_name="+")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.GRID)
    run = models.ForeignKey(
        RecipeRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The run whose grid it was made in.",
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["recipe", "image"]
        constraints = [
            models.UniqueConstraint(fields=["recipe", "image"], name="unique_recipe_decision")
        ]

    def __str__(self) -> str:
        return f"{self.recipe}: {self.image} {self.decision}"


class ImageFeatures(models.Model):
    """Cached labelling-function measurements of one image (curation.weak.features).

    Kept apart from Image so ingest never waits on it and a new feature version is a cheap
    recompute: rows whose `version` differs from the current one are ignored and rewritten.
    NaN is stored as null (JSON has no NaN).
    """

    image = models.OneToOneField(
        "curation.Image", on_delete=models.CASCADE, primary_key=True, related_name="features"
    )
    version = models.CharField(max_length=32)
    values = models.JSONField(default=dict)
    error = models.TextField(blank=True, help_text="Why the image could not be measured.")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "image features"

    def __str__(self) -> str:
        return f"features of image {self.image_id}"
