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

    def validate(self, attrs: dict) -> dict:
        """Only frozen versions and the recipe's roles, hyperparameters merged over defaults."""
        from training.services.runs.inputs import TrainingRunError, validate_run_inputs

        instance = self.instance
        values = {
            name: attrs.get(name, getattr(instance, name, None))
            for name in ("recipe", "adapter", "base_checkpoint", "hyperparameters")
        }
        if "dataset_versions" in attrs:
            versions = list(attrs["dataset_versions"])
        else:
            versions = list(instance.dataset_versions.all()) if instance else []
        try:
            attrs["hyperparameters"] = validate_run_inputs(
                recipe=values["recipe"] or TrainingRun.Recipe.STYLE_TAILORING,
                adapter=values["adapter"] or TrainingRun.Adapter.LORA,
                dataset_versions=versions,
                base_checkpoint=values["base_checkpoint"],
                hyperparameters=values["hyperparameters"] or {},
            )
        except TrainingRunError as error:
            raise serializers.ValidationError(
                {error.field.split(".")[0]: [error.message]}
            ) from error
        return attrs


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
