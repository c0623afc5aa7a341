from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from curation.api.deletion import RefuseRecordDeletes
from curation.api.permissions import ActionPermission
from curation.api.serializers import JobSerializer
from training.api import serializers as s
from training.models import Checkpoint, Generation, GenerationBatch, TrainingRun

START = "training.start_trainingrun"


class TrainingRunViewSet(RefuseRecordDeletes, viewsets.ModelViewSet):
    queryset = TrainingRun.objects.prefetch_related("dataset_versions")
    serializer_class = s.TrainingRunSerializer
    filterset_fields = ["status", "recipe", "adapter"]
    permission_classes = [ActionPermission]
    action_permissions = {"start": START, "cancel": START, "resume": START}

    def perform_create(self, serializer) -> None:
        serializer.save(created_by=self.request.user)

    def _act(self, pk: str | None, what: str, request: Request) -> Response:
        from curation.services.jobs import JobNotRetryable
        from training.services.runs import jobs as run_jobs
        from training.services.runs.inputs import TrainingRunError

        run = get_object_or_404(TrainingRun, pk=pk)
        try:
            if what == "start":
                job = run_jobs.enqueue_training(run, request.user)
            elif what == "resume":
                job = run_jobs.resume_training(run, request.user)
            else:
                job = run_jobs.cancel_training(run)
        except (TrainingRunError, run_jobs.RunNotStartable, JobNotRetryable) as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        if job is None:
            return Response({"detail": "the run has no job"}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        return self._act(pk, "start", request)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return self._act(pk, "cancel", request)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        return self._act(pk, "resume", request)


class CheckpointViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Checkpoint.objects.prefetch_related("dataset_versions")
    serializer_class = s.CheckpointSerializer
    filterset_fields = ["adapter", "training_run", "parent"]


class GenerationBatchViewSet(RefuseRecordDeletes, viewsets.ModelViewSet):
    queryset = GenerationBatch.objects.all()
    serializer_class = s.GenerationBatchSerializer
    filterset_fields = ["status", "checkpoint", "prompt_set"]
    permission_classes = [ActionPermission]
    action_permissions = {"start": START}

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        from training.services.generation import (
            BatchNotStartable,
            GenerationBatchError,
            enqueue_generation,
        )

        batch = get_object_or_404(GenerationBatch, pk=pk)
        try:
            job = enqueue_generation(batch, request.user)
        except (BatchNotStartable, GenerationBatchError) as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class GenerationViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Generation.objects.all()
    serializer_class = s.GenerationSerializer
    filterset_fields = ["batch", "seed", "prompt"]
