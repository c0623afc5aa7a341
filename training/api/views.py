from rest_framework import viewsets

from training.api import serializers as s
from training.models import Checkpoint, Generation, GenerationBatch, TrainingRun


class TrainingRunViewSet(viewsets.ModelViewSet):
    queryset = TrainingRun.objects.prefetch_related("dataset_versions")
    serializer_class = s.TrainingRunSerializer
    filterset_fields = ["status", "recipe", "adapter"]


class CheckpointViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Checkpoint.objects.prefetch_related("dataset_versions")
    serializer_class = s.CheckpointSerializer
    filterset_fields = ["adapter", "training_run", "parent"]


class GenerationBatchViewSet(viewsets.ModelViewSet):
    queryset = GenerationBatch.objects.all()
    serializer_class = s.GenerationBatchSerializer
    filterset_fields = ["status", "checkpoint", "prompt_set"]


class GenerationViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Generation.objects.all()
    serializer_class = s.GenerationSerializer
    filterset_fields = ["batch", "seed", "prompt"]
