"""Annotation rounds in Label Studio: tasks, raw annotations, webhook events, judgements."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from curation.models.base import TimeStampedModel


class AnnotationRound(TimeStampedModel):
    class Kind(models.TextChoices):
        ALIGNMENT = "alignment", "Alignment"
        STYLE = "style", "Style"
        PAIRWISE = "pairwise", "Pairwise A/B"

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUSHED = "pushed", "Pushed"
        ANNOTATING = "annotating", "Annotating"
        CLOSED = "closed", "Closed"
        CURATED = "curated", "Curated"

    name = models.CharField(max_length=160)
    kind = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.DRAFT, db_index=True
    )
    generation_batch = models.ForeignKey(
        "training.GenerationBatch",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rounds",
    )
    other_generation_batch = models.ForeignKey(
        "training.GenerationBatch",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Pairwise rounds: the batch shown on the right (same prompts and seeds).",
    )
    overlap = models.PositiveSmallIntegerField(default=3)
    gold_rate = models.FloatField(default=0.1)
    gold_accuracy_threshold = models.FloatField(default=0.7)
    labelstudio_project_id = models.PositiveIntegerField(null=True, blank=True)
    # Fixed at the first push and never changed: projects are found again by exact title, so a
    # retried push (or one after the platform's database was reset) never makes a second one.
    labelstudio_title = models.CharField(max_length=200, blank=True)
    reconcile_watermark = models.DateTimeField(null=True, blank=True)
    style_exemplars = models.ManyToManyField("curation.Image", blank=True, related_name="+")
    result_version = models.ForeignKey(
        "curation.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    curation_rules = models.JSONField(
        default=dict,
        blank=True,
        help_text='Thresholds for curating, e.g. {"min_aligned_votes": 2} or {"min_rating": 4}.',
    )
    quality = models.JSONField(
        default=dict, blank=True, help_text="Agreement, gold accuracy and counts, last computed."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="annotation_rounds",
        help_text="Annotators who work on this round: the only annotators who see it.",
    )
    # Rounds are never deleted (their annotations are the record); archiving hides them.
    archived = models.BooleanField(default=False, db_index=True)
    media_generation = models.PositiveIntegerField(
        default=0,
        help_text="Signed into the round's media links; raising it (a member removed, the "
        "round closed) ends every link issued before.",
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("start_round", "Can start and push annotation rounds")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.state})"


class LabelTask(TimeStampedModel):
    """Our task ↔ Label Studio's task id; `key` is ours so pushes are idempotent."""

    round = models.ForeignKey(AnnotationRound, on_delete=models.PROTECT, related_name="tasks")
    key = models.CharField(max_length=120)
    # PROTECT: deleting a generation or image must never take rated tasks with it.
    generation = models.ForeignKey(
        "training.Generation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    image = models.ForeignKey(
        "curation.Image", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    other_generation = models.ForeignKey(
        "training.Generation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompt = models.TextField(blank=True)
    is_gold = models.BooleanField(default=False)
    gold_answer = models.JSONField(default=dict, blank=True)
    labelstudio_task_id = models.PositiveIntegerField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["round", "key"], name="unique_task_key")]

    def __str__(self) -> str:
        return f"{self.round_id}:{self.key}"


class WebhookEvent(models.Model):
    """Raw webhook payloads, stored before parsing so a parse bug never loses an event."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=64, blank=True)
    payload = models.JSONField()
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class Annotation(models.Model):
    """One annotation as Label Studio last reported it; raw JSON kept beside the parsed fields."""

    task = models.ForeignKey(LabelTask, on_delete=models.PROTECT, related_name="annotations")
    labelstudio_id = models.PositiveIntegerField(unique=True)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    annotator_email = models.CharField(max_length=254, blank=True)
    labelstudio_user_id = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    raw = models.JSONField()
    aligned = models.BooleanField(null=True)
    passed = models.BooleanField(null=True)
    rating = models.PositiveSmallIntegerField(null=True)
    preferred = models.CharField(max_length=8, blank=True)
    issues = models.JSONField(default=list, blank=True)
    deleted = models.BooleanField(default=False)
    was_cancelled = models.BooleanField(default=False, help_text="Skipped in Label Studio.")
    annotated_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"annotation {self.labelstudio_id}"


class Judgement(models.Model):
    """The aggregated verdict on one task after agreement and gold checks."""

    task = models.OneToOneField(LabelTask, on_delete=models.PROTECT, related_name="judgement")
    value = models.JSONField(default=dict)
    confidence = models.FloatField(default=0.0)
    n_ratings = models.PositiveSmallIntegerField(default=0)
    method = models.CharField(max_length=32, default="majority")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"judgement for {self.task}"


class AnnotatorAccount(TimeStampedModel):
    """A platform user's Label Studio account and what the platform last saw of it.

    No password is kept: one is shown once to whoever issues it. The account's own API token is
    kept so the platform can act as the annotator (the demo script) without knowing a password.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labelstudio_account"
    )
    email = models.CharField(max_length=254, help_text="What the annotator types to log in.")
    labelstudio_user_id = models.PositiveIntegerField(unique=True)
    active = models.BooleanField(
        default=True, help_text="False once the user left the annotator role: not counted."
    )
    labelstudio_active = models.BooleanField(
        default=True,
        help_text="Whether the account can log in to Label Studio (switched off on revoke).",
    )
    password_issued_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a password was last issued (shown once); empty: nobody has one yet.",
    )
    last_activity = models.DateTimeField(
        null=True, blank=True, help_text="Last activity in Label Studio, read at each sync."
    )
    synced_at = models.DateTimeField(null=True, blank=True)
    api_token = models.CharField(max_length=80, blank=True, editable=False)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return f"{self.email} (Label Studio user {self.labelstudio_user_id})"


class AnnotatorRoundStats(models.Model):
    """Per round and annotator: gold accuracy, agreement with consensus, and the flag."""

    round = models.ForeignKey(
        AnnotationRound, on_delete=models.CASCADE, related_name="annotator_stats"
    )
    labelstudio_user_id = models.PositiveIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    label = models.CharField(max_length=254, blank=True)
    annotations = models.PositiveIntegerField(default=0)
    gold_answered = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    gold_accuracy = models.FloatField(null=True, blank=True)
    consensus_agreement = models.FloatField(null=True, blank=True)
    counted = models.BooleanField(
        default=True, help_text="False for accounts the platform did not create for an annotator."
    )
    flagged = models.BooleanField(default=False, db_index=True)

    class Meta:
        ordering = ["round", "label"]
        verbose_name_plural = "annotator round stats"
        constraints = [
            models.UniqueConstraint(
                fields=["round", "labelstudio_user_id"], name="unique_round_annotator"
            )
        ]

    def __str__(self) -> str:
        return f"{self.label or self.labelstudio_user_id} in round {self.round_id}"
