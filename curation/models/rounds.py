"""Annotation rounds in Label Studio: tasks, raw annotations, webhook events, judgements."""

from __future__ import annotations

import hashlib

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
    gold_rate = models.FloatField(
        default=0.1, help_text="Gold tasks mixed in per regular task (from the gold pool)."
    )
    gold_accuracy_threshold = models.FloatField(
        default=0.7,
        help_text="An annotator is excluded when the upper bound of their gold accuracy's "
        "confidence interval is below this.",
    )
    min_gold_answered = models.PositiveSmallIntegerField(
        default=5, help_text="Gold answers an annotator must give before gold can exclude them."
    )
    gold_confidence = models.FloatField(
        default=0.95, help_text="Confidence of the Wilson interval on gold accuracy."
    )
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
    closing_snapshot = models.JSONField(
        default=dict,
        blank=True,
        help_text="Taken when the round closes: the annotation versions, who counted, who was "
        "excluded and why, and the settings; curation reads only this afterwards.",
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
    # The mapping that counts: our task <-> Label Studio's task id, set by pushes only (never
    # from task data, which anyone in Label Studio can edit). Earlier ids (a task deleted in
    # Label Studio and pushed again) are kept in order.
    labelstudio_task_id = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    previous_labelstudio_task_ids = models.JSONField(default=list, blank=True)

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
    """The current state of one Label Studio annotation, derived from its latest version.

    Written only by `annotation_store.apply_pull` from what Label Studio's API answered (never
    from a webhook body); every change is an `AnnotationVersion` row first.
    """

    task = models.ForeignKey(LabelTask, on_delete=models.PROTECT, related_name="annotations")
    labelstudio_id = models.PositiveIntegerField(unique=True)
    labelstudio_task_id = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    observed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the platform read the current state from Label Studio.",
    )
    deleted_reason = models.CharField(max_length=200, blank=True)
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


class AnnotationVersion(models.Model):
    """Append-only: every state of an annotation the platform saw, when and how it saw it."""

    class Change(models.TextChoices):
        CREATED = "created", "Created"
        EDITED = "edited", "Edited"
        DELETED = "deleted", "Deleted"
        RESTORED = "restored", "Seen again after a deletion"

    class Source(models.TextChoices):
        WEBHOOK = "webhook", "Read after a webhook"
        RECONCILE = "reconcile", "Reconcile"
        PUSH = "push", "Push (task or project gone)"
        LEGACY = "legacy", "Stored before versions were kept"

    annotation = models.ForeignKey(Annotation, on_delete=models.PROTECT, related_name="versions")
    change = models.CharField(max_length=16, choices=Change.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    seen_at = models.DateTimeField(db_index=True)
    labelstudio_updated_at = models.DateTimeField(null=True, blank=True)
    labelstudio_task_id = models.PositiveIntegerField(null=True, blank=True)
    raw = models.JSONField(null=True, blank=True, help_text="As Label Studio's API returned it.")
    reason = models.CharField(max_length=200, blank=True)
    webhook_event = models.ForeignKey(
        WebhookEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["annotation", "id"]

    def __str__(self) -> str:
        return f"annotation {self.annotation_id} {self.change} ({self.source})"


class RoundNotice(models.Model):
    """Something Label Studio did to a round that a data lead must know (never silent)."""

    class Kind(models.TextChoices):
        TASK_DELETED = "task_deleted", "Task deleted in Label Studio"
        TASK_REPUSHED = "task_repushed", "Task pushed again"
        PROJECT_REPLACED = "project_replaced", "Project gone from Label Studio, pushed again"
        TASK_DATA_EDITED = "task_data_edited", "Task data edited in Label Studio"
        UNKNOWN_TASK = "unknown_task", "Task in the project that is not the round's"
        NO_GOLD = "no_gold", "No gold tasks"

    round = models.ForeignKey(AnnotationRound, on_delete=models.PROTECT, related_name="notices")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"round {self.round_id}: {self.get_kind_display()}"


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
    # A personal access token (a JWT, ~250 characters) or, on older servers, a legacy token.
    api_token = models.CharField(max_length=512, blank=True, editable=False)
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
    gold_accuracy_low = models.FloatField(null=True, blank=True)
    gold_accuracy_high = models.FloatField(null=True, blank=True)
    consensus_agreement = models.FloatField(null=True, blank=True)
    excluded_reason = models.CharField(max_length=300, blank=True)
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


class GoldItem(TimeStampedModel):
    """A task with a known answer, in the pool rounds draw their gold tasks from.

    Answers look like {"aligned": true}, {"passed": false, "rating": 2} or {"preferred": "left"}
    (left meaning `generation`, right `other_generation`).
    """

    kind = models.CharField(max_length=16, choices=AnnotationRound.Kind.choices, db_index=True)
    answer = models.JSONField()
    image = models.ForeignKey(
        "curation.Image", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompt = models.TextField(blank=True)
    generation = models.ForeignKey(
        "training.Generation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    other_generation = models.ForeignKey(
        "training.Generation", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    source_task = models.ForeignKey(
        LabelTask,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The judged task it was taken from, if any.",
    )
    active = models.BooleanField(default=True, help_text="Only active items are mixed in.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "gold item"

    def __str__(self) -> str:
        return f"{self.kind} gold {self.pk}: {self.answer}"

    @property
    def identity(self) -> str:
        parts = [self.generation_id, self.other_generation_id, self.image_id, self.prompt]
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
