from rest_framework import serializers

from training.models import Checkpoint, Generation, GenerationBatch, TrainingRun


class TrainingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "name",
            "recipe",
            "adapter",
            "base_checkpoint",
            "dataset_versions",
            "hyperparameters",
            "status",
            "job",
            "loss_curve",
            "output_dir",
            "created_at",
        ]
        read_only_fields = ["status", "job", "loss_curve", "output_dir", "created_at"]


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = [
            "id",
            "name",
            "path",
            "base_model",
            "adapter",
            "parent",
            "training_run",
            "dataset_versions",
            "config",
            "lineage",
            "metrics",
            "step",
            "created_at",
        ]
        read_only_fields = fields


class GenerationBatchSerializer(serializers.ModelSerializer):
    class Meta:
        model = GenerationBatch
        fields = [
            "id",
            "name",
            "checkpoint",
            "prompt_set",
            "style_descriptor",
            "seeds",
            "sampler",
            "status",
            "job",
            "auto_round_kinds",
            "created_at",
        ]
        read_only_fields = ["status", "job", "created_at"]


class GenerationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Generation
        fields = ["id", "batch", "prompt", "prompt_text", "seed", "image", "created_at"]
        read_only_fields = fields
