"""Datasets and their immutable, versioned manifests."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from curation.models.base import TimeStampedModel


class Dataset(TimeStampedModel):
    class Kind(models.TextChoices):
        DOMAIN = "domain", "Domain"
        ALIGNMENT = "alignment", "Alignment"
        STYLE = "style", "Style"
        EVAL = "eval", "Evaluation"

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class FrozenVersionError(ValidationError):
    pass


class DatasetVersion(TimeStampedModel):
    """Rows are edited while a version is a draft; freezing writes the Parquet manifest and its
    checksum, after which neither the version nor its rows can change."""

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        FROZEN = "frozen", "Frozen"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.DRAFT, db_index=True
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    manifest_path = models.CharField(max_length=1024, blank=True)
    checksum = models.CharField(max_length=64, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    diff = models.JSONField(default=dict, blank=True, help_text="Added/removed against the parent.")
    reason = models.TextField(blank=True)
    lineage = models.JSONField(default=dict, blank=True, help_text="Recipe runs, rounds, sources.")
    frozen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    frozen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="unique_version_number")
        ]
        permissions = [("freeze_datasetversion", "Can freeze dataset versions")]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def is_frozen(self) -> bool:
        return self.state == self.State.FROZEN

    def save(self, *args, **kwargs) -> None:
        if self.pk and not kwargs.pop("allow_frozen", False):
            stored = (
                DatasetVersion.objects.filter(pk=self.pk).values_list("state", flat=True).first()
            )
            if stored == self.State.FROZEN:
                raise FrozenVersionError(f"{self} is frozen and cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.is_frozen:
            raise FrozenVersionError(f"{self} is frozen and cannot be deleted.")
        return super().delete(*args, **kwargs)


class DatasetItem(models.Model):
    """One manifest row: an image with its caption or prompt, label, weight and split."""

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        VAL = "val", "Validation"
        TEST = "test", "Test"

    # No index of its own: `unique_image_per_version` leads with the version and serves every
    # lookup by version; a second index only slowed the million-row inserts of a freeze.
    # No foreign-key constraint in the database either: a version's rows are written only in
    # the transaction that created the version (or while it is a draft), a frozen version is
    # never changed, and deleting one goes through Django's collector, which deletes its rows
    # (CASCADE). On PostgreSQL the constraint cost a million deferred checks at the commit of
    # a million-row freeze. The key to the image keeps its constraint: images are deleted
    # while versions are frozen, and a frozen row must never lose its image.
    version = models.ForeignKey(
        DatasetVersion,
        on_delete=models.CASCADE,
        related_name="items",
        db_index=False,
        db_constraint=False,
    )
    image = models.ForeignKey("curation.Image", on_delete=models.PROTECT, related_name="+")
    caption = models.TextField(blank=True)
    label = models.CharField(max_length=64, blank=True)
    weight = models.FloatField(default=1.0)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["version", "image"], name="unique_image_per_version")
        ]

    def __str__(self) -> str:
        return f"{self.version}: {self.image_id}"

    def save(self, *args, **kwargs) -> None:
        self._check_draft()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._check_draft()
        return super().delete(*args, **kwargs)

    def _check_draft(self) -> None:
        state = (
            DatasetVersion.objects.filter(pk=self.version_id)
            .values_list("state", flat=True)
            .first()
        )
        if state == DatasetVersion.State.FROZEN:
            raise FrozenVersionError("Rows of a frozen dataset version cannot change.")
