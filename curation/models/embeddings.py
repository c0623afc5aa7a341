"""CLIP embedding spaces, their shards on disk, and the FAISS indexes built from them."""

from __future__ import annotations

from django.db import models

from curation.models.base import TimeStampedModel


class EmbeddingSpace(TimeStampedModel):
    """A model name + weights checksum + preprocessing: vectors are comparable only inside one."""

    name = models.CharField(max_length=120, unique=True)
    model_name = models.CharField(max_length=120)
    weights_path = models.CharField(max_length=1024, blank=True)
    weights_sha256 = models.CharField(max_length=64)
    preprocessing = models.JSONField(default=dict, blank=True)
    dim = models.PositiveIntegerField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EmbeddingShard(TimeStampedModel):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="shards")
    index = models.PositiveIntegerField()
    first_image_id = models.BigIntegerField()
    last_image_id = models.BigIntegerField()
    path = models.CharField(max_length=1024, blank=True)
    count = models.PositiveIntegerField(default=0)
    failures = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)

    class Meta:
        ordering = ["space", "index"]
        constraints = [
            models.UniqueConstraint(fields=["space", "index"], name="unique_shard_per_space")
        ]

    def __str__(self) -> str:
        return f"{self.space} shard {self.index}"


class VectorIndex(TimeStampedModel):
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="indexes")
    version = models.PositiveIntegerField()
    index_type = models.CharField(max_length=120, help_text="FAISS factory string.")
    params = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=1024)
    vector_count = models.PositiveBigIntegerField(default=0)
    recall_at_k = models.FloatField(
        null=True, blank=True, help_text="Held-out image vectors as queries, vs exact search."
    )
    text_recall_at_k = models.FloatField(
        null=True,
        blank=True,
        help_text="Text-query embeddings as queries, vs exact search (the modality gap makes "
        "text→image search harder than image→image).",
    )
    recall_k = models.PositiveIntegerField(default=100)
    built_from = models.ManyToManyField(EmbeddingShard, blank=True, related_name="indexes")

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "vector indexes"
        constraints = [
            models.UniqueConstraint(fields=["space", "version"], name="unique_index_version")
        ]

    def __str__(self) -> str:
        return f"{self.space} index v{self.version} ({self.index_type})"
