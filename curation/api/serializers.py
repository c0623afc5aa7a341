"""Thin serializers; writes that need rules go through services, not serializers."""

from rest_framework import serializers

from curation.media import signed_path
from curation.models import (
    AnnotationRound,
    Dataset,
    DatasetVersion,
    Image,
    IngestBatch,
    Job,
    Prompt,
    PromptSet,
    Recipe,
    Schedule,
    Source,
    StyleDescriptor,
    VectorIndex,
)


class SourceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Source
        fields = ["id", "name", "description", "created_at"]


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    quarantined_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Image
        fields = [
            "id",
            "sha256",
            "phash",
            "width",
            "height",
            "format",
            "has_alpha",
            "status",
            "duplicate_of",
            "source",
            "origin",
            "caption",
            "quarantine_reason",
            "quarantined_by",
            "quarantined_at",
            "created_at",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, obj: Image) -> str | None:
        return signed_path(obj.storage_key) if obj.storage_key else None


class QuarantineSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the image is taken out of use.")


class IngestBatchSerializer(serializers.ModelSerializer):
    class Meta:
        model = IngestBatch
        fields = [
            "id",
            "source",
            "paths",
            "ingested",
            "duplicates",
            "near_duplicates",
            "quarantined",
            "job",
            "created_at",
        ]
        read_only_fields = fields


class DatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["id", "name", "kind", "description", "created_at"]


class DatasetVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "dataset",
            "number",
            "state",
            "parent",
            "manifest_path",
            "checksum",
            "row_count",
            "diff",
            "reason",
            "lineage",
            "frozen_by",
            "frozen_at",
            "created_at",
        ]
        read_only_fields = [
            "number",
            "state",
            "manifest_path",
            "checksum",
            "row_count",
            "diff",
            "lineage",
            "frozen_by",
            "frozen_at",
            "created_at",
        ]


class RecipeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Recipe
        fields = [
            "id",
            "name",
            "description",
            "text_queries",
            "negative_queries",
            "exemplars",
            "labelling_functions",
            "threshold",
            "top_k",
            "created_at",
        ]


class VectorIndexSerializer(serializers.ModelSerializer):
    class Meta:
        model = VectorIndex
        fields = [
            "id",
            "space",
            "version",
            "index_type",
            "params",
            "vector_count",
            "recall_at_k",
            "recall_k",
            "created_at",
        ]
        read_only_fields = fields


class StyleDescriptorSerializer(serializers.ModelSerializer):
    class Meta:
        model = StyleDescriptor
        fields = ["id", "name", "prefix", "suffix"]


class PromptSetSerializer(serializers.ModelSerializer):
    class Meta:
        model = PromptSet
        fields = ["id", "name", "version", "purpose", "frozen", "parent", "description", "stats"]
        read_only_fields = ["frozen", "stats"]


class PromptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "prompt_set", "text", "category", "subject", "tags", "slots"]


class AnnotationRoundSerializer(serializers.ModelSerializer):
    """What data leads and admins see; rounds are created through `create_round` (the view)."""

    class Meta:
        model = AnnotationRound
        fields = [
            "id",
            "name",
            "kind",
            "state",
            "generation_batch",
            "other_generation_batch",
            "overlap",
            "gold_rate",
            "gold_accuracy_threshold",
            "curation_rules",
            "members",
            "labelstudio_project_id",
            "result_version",
            "archived",
            "created_at",
        ]
        read_only_fields = [
            "state",
            "labelstudio_project_id",
            "result_version",
            "archived",
            "created_at",
        ]
        extra_kwargs = {"members": {"required": False}}


class AnnotatorRoundSerializer(serializers.ModelSerializer):
    """What an annotator sees of a round they work on: no gold rate, gold flags or thresholds."""

    class Meta:
        model = AnnotationRound
        fields = ["id", "name", "kind", "state", "overlap", "labelstudio_project_id", "created_at"]
        read_only_fields = fields


class JobSerializer(serializers.ModelSerializer):
    percent = serializers.FloatField(read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "queue",
            "status",
            "params",
            "result",
            "state",
            "percent",
            "progress_done",
            "progress_total",
            "progress_message",
            "log_tail",
            "error",
            "attempt",
            "max_attempts",
            "cancel_requested",
            "worker_id",
            "heartbeat_at",
            "started_at",
            "finished_at",
            "retry_at",
            "target_type",
            "target_id",
            "created_at",
        ]
        read_only_fields = fields


class ScheduleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Schedule
        fields = [
            "id",
            "name",
            "cron",
            "job_kind",
            "queue",
            "params",
            "enabled",
            "next_run_at",
            "last_run_at",
            "last_error",
        ]
        read_only_fields = ["next_run_at", "last_run_at", "last_error"]

    def validate(self, attrs: dict) -> dict:
        """The model's own checks (cron, job kind, queue, params), each under its field name."""
        draft = Schedule(
            **{
                name: getattr(self.instance, name)
                for name in ("name", "cron", "job_kind", "queue", "params", "enabled")
                if self.instance is not None
            }
        )
        for name, value in attrs.items():
            setattr(draft, name, value)
        if errors := draft.validation_errors():
            raise serializers.ValidationError(errors)
        return attrs
