"""Thin API views: querysets from selectors, writes with rules through services."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from curation.api import serializers as s
from curation.api.permissions import ActionPermission
from curation.models import (
    AnnotationRound,
    Dataset,
    DatasetVersion,
    Image,
    IngestBatch,
    Job,
    Recipe,
    Schedule,
    Source,
    VectorIndex,
)
from curation.services import jobs as job_services
from curation.services.schedules import save_schedule


class SourceViewSet(viewsets.ModelViewSet):
    queryset = Source.objects.all()
    serializer_class = s.SourceSerializer
    filterset_fields = ["name"]


class ImageViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Image.objects.all()
    serializer_class = s.ImageSerializer
    filterset_fields = {
        "status": ["exact"],
        "has_alpha": ["exact"],
        "source": ["exact"],
        "format": ["exact"],
        "sha256": ["exact"],
        "width": ["gte", "lte"],
        "height": ["gte", "lte"],
    }


class IngestBatchViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = IngestBatch.objects.select_related("source")
    serializer_class = s.IngestBatchSerializer
    filterset_fields = ["source"]


class DatasetViewSet(viewsets.ModelViewSet):
    queryset = Dataset.objects.all()
    serializer_class = s.DatasetSerializer
    filterset_fields = ["kind", "name"]


class DatasetVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = DatasetVersion.objects.select_related("dataset", "frozen_by")
    serializer_class = s.DatasetVersionSerializer
    filterset_fields = ["dataset", "state", "dataset__kind"]


class RecipeViewSet(viewsets.ModelViewSet):
    queryset = Recipe.objects.prefetch_related("exemplars")
    serializer_class = s.RecipeSerializer
    filterset_fields = ["name"]


class VectorIndexViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = VectorIndex.objects.select_related("space")
    serializer_class = s.VectorIndexSerializer
    filterset_fields = ["space", "index_type"]


class AnnotationRoundViewSet(viewsets.ModelViewSet):
    queryset = AnnotationRound.objects.all()
    serializer_class = s.AnnotationRoundSerializer
    filterset_fields = ["kind", "state", "generation_batch"]


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Job.objects.all()
    serializer_class = s.JobSerializer
    filterset_fields = ["status", "kind", "queue", "target_type", "target_id"]
    permission_classes = [ActionPermission]
    action_permissions = {"cancel": "curation.cancel_job", "retry": "curation.cancel_job"}

    @extend_schema(request=None, responses=s.JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = job_services.request_cancel(get_object_or_404(Job, pk=pk))
        return Response(s.JobSerializer(job).data)

    @extend_schema(request=None, responses=s.JobSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        try:
            job = job_services.retry_job(get_object_or_404(Job, pk=pk))
        except job_services.JobNotRetryable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.JobSerializer(job).data)


class ScheduleViewSet(viewsets.ModelViewSet):
    queryset = Schedule.objects.all()
    serializer_class = s.ScheduleSerializer
    filterset_fields = ["enabled", "job_kind"]

    def perform_create(self, serializer: s.ScheduleSerializer) -> None:
        save_schedule(Schedule(**serializer.validated_data))
        serializer.instance = Schedule.objects.get(name=serializer.validated_data["name"])

    def perform_update(self, serializer: s.ScheduleSerializer) -> None:
        instance = serializer.instance
        for field, value in serializer.validated_data.items():
            setattr(instance, field, value)
        save_schedule(instance)
