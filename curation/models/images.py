"""The image pool: where images came from, what each ingest did, and the images themselves."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from curation.models.base import TimeStampedModel


class Source(TimeStampedModel):
    name = models.SlugField(max_length=120, unique=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class IngestBatch(TimeStampedModel):
    """One `ingest` invocation; counts and refusals are kept so a person can see what happened.

    `position` is how many files are settled: each has a BatchFile row, committed together with
    its Image/Refusal row and these counts, so a resumed run skips exactly those files.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled (resumable)"
        FAILED = "failed", "Failed (resumable)"

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="batches")
    paths = models.JSONField(default=list)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    position = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Items found under the paths, when countable cheaply."
    )
    ingested = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    near_duplicates = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    job = models.ForeignKey("curation.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ingest batches"

    def __str__(self) -> str:
        return f"ingest #{self.pk} of {self.source}"


def usable_q(prefix: str = "") -> models.Q:
    """The one definition of a usable image every reader applies (recipes, search, review,
    freezing, exports, Label Studio pushes, training manifests): status ok and bytes stored.
    Quarantined and near-duplicate images are never usable. `prefix` reaches it through a
    relation, e.g. `usable_q("image__")` on RecipeScore or DatasetItem."""
    return models.Q(**{f"{prefix}status": "ok"}) & ~models.Q(**{f"{prefix}storage_key": ""})


class ImageQuerySet(models.QuerySet):
    def usable(self) -> ImageQuerySet:
        return self.filter(usable_q())

    def quarantined(self) -> ImageQuerySet:
        return self.filter(status=Image.Status.QUARANTINED)


class Image(TimeStampedModel):
    class Status(models.TextChoices):
        OK = "ok", "OK"
        QUARANTINED = "quarantined", "Quarantined"
        DUPLICATE = "duplicate", "Near-duplicate"

    sha256 = models.CharField(max_length=64, unique=True)
    phash = models.CharField(max_length=16, blank=True, db_index=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    format = models.CharField(max_length=16, blank=True)
    has_alpha = models.BooleanField(default=False, db_index=True)
    storage_key = models.CharField(max_length=255, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.OK, db_index=True
    )
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="near_duplicates"
    )
    source = models.ForeignKey(
        Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="images"
    )
    batch = models.ForeignKey(
        IngestBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="images"
    )
    origin = models.CharField(max_length=1024, blank=True, help_text="Path, archive member or URL.")
    caption = models.TextField(blank=True)
    original_key = models.CharField(
        max_length=255,
        blank=True,
        help_text="The file as supplied, kept when ingest stripped metadata (EXIF, XMP, text) "
        "from the stored bytes; only a version that asks for original bytes uses it.",
    )
    quarantine_reason = models.TextField(blank=True)
    quarantined_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    quarantined_at = models.DateTimeField(null=True, blank=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"image {self.sha256[:12]}"

    @property
    def is_usable(self) -> bool:
        return self.status == self.Status.OK and bool(self.storage_key)


class Refusal(TimeStampedModel):
    """A file ingest refused, with a reason a person understands; nothing is stored for it."""

    batch = models.ForeignKey(IngestBatch, on_delete=models.CASCADE, related_name="refusals")
    origin = models.CharField(max_length=1024)
    sha256 = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="Of the refused bytes (blank when they could not be read), so the same bad "
        "file is recognised when it comes again.",
    )
    reason = models.TextField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A resumed or re-run attempt of the same batch cannot record a file twice.
            models.UniqueConstraint(
                fields=["batch", "origin", "sha256"], name="unique_refusal_per_batch_file"
            )
        ]

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


class BatchFile(models.Model):
    """One file a batch has settled, identified by where it came from and its content.

    Written in the same transaction as the file's Image or Refusal row and the batch counts, so
    a resumed run skips exactly the files recorded here (whatever order the files now sort in)
    and a second attempt of the same batch cannot count a file twice.
    """

    class Outcome(models.TextChoices):
        INGESTED = "ingested", "Ingested"
        DUPLICATE = "duplicate", "Exact duplicate"
        NEAR_DUPLICATE = "near_duplicate", "Near-duplicate"
        REFUSED = "quarantined", "Refused"

    batch = models.ForeignKey(IngestBatch, on_delete=models.CASCADE, related_name="files")
    origin = models.CharField(max_length=1024)
    sha256 = models.CharField(max_length=64, blank=True, help_text="Blank when unreadable.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "origin", "sha256"], name="unique_batch_file")
        ]

    def __str__(self) -> str:
        return f"{self.origin}: {self.outcome}"
