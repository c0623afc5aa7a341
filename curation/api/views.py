"""Thin API views: querysets from selectors, writes with rules through services."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from curation.api import serializers as s
from curation.api.deletion import NeverDeleted, RefuseRecordDeletes
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
from curation.selectors.rounds import sees_round_internals, visible_rounds
from curation.services import jobs as job_services
from curation.services.quarantine import quarantine_images, release_images
from curation.services.rounds.archive import set_archived
from curation.services.rounds.create import create_round
from curation.services.schedules import save_schedule


class SourceViewSet(RefuseRecordDeletes, viewsets.ModelViewSet):
    queryset = Source.objects.all()
    serializer_class = s.SourceSerializer
    filterset_fields = ["name"]


class ImageViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Image.objects.select_related("quarantined_by")
    serializer_class = s.ImageSerializer
    permission_classes = [ActionPermission]
    action_permissions = {"quarantine": "curation.change_image", "release": "curation.change_image"}
    filterset_fields = {
        "status": ["exact"],
        "has_alpha": ["exact"],
        "source": ["exact"],
        "format": ["exact"],
        "sha256": ["exact"],
        "width": ["gte", "lte"],
        "height": ["gte", "lte"],
    }

    @extend_schema(request=s.QuarantineSerializer, responses=s.ImageSerializer)
    @action(detail=True, methods=["post"])
    def quarantine(self, request: Request, pk: str | None = None) -> Response:
        """Take the image out of every use (recipes, search, grid, freezes, exports, pushes)."""
        payload = s.QuarantineSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        image = self.get_object()
        changed = quarantine_images(
            Image.objects.filter(pk=image.pk),
            reason=payload.validated_data["reason"],
            user=request.user,
        )
        if not changed:
            return Response(
                {"detail": f"image {image.pk} is already quarantined: {image.quarantine_reason}"},
                status=status.HTTP_409_CONFLICT,
            )
        image.refresh_from_db()
        return Response(s.ImageSerializer(image, context={"request": request}).data)

    @extend_schema(request=None, responses=s.ImageSerializer)
    @action(detail=True, methods=["post"])
    def release(self, request: Request, pk: str | None = None) -> Response:
        """Put a quarantined image back into use."""
        image = self.get_object()
        if not release_images(Image.objects.filter(pk=image.pk)):
            return Response(
                {"detail": f"image {image.pk} is not quarantined (status {image.status})"},
                status=status.HTTP_409_CONFLICT,
            )
        image.refresh_from_db()
        return Response(s.ImageSerializer(image, context={"request": request}).data)


class IngestBatchViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = IngestBatch.objects.select_related("source")
    serializer_class = s.IngestBatchSerializer
    filterset_fields = ["source"]


class DatasetViewSet(RefuseRecordDeletes, viewsets.ModelViewSet):
    queryset = Dataset.objects.all()
    serializer_class = s.DatasetSerializer
    filterset_fields = ["kind", "name"]


class DatasetVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = DatasetVersion.objects.select_related("dataset", "frozen_by")
    serializer_class = s.DatasetVersionSerializer
    filterset_fields = ["dataset", "state", "dataset__kind"]


class RecipeViewSet(RefuseRecordDeletes, viewsets.ModelViewSet):
    queryset = Recipe.objects.prefetch_related("exemplars")
    serializer_class = s.RecipeSerializer
    filterset_fields = ["name"]


class VectorIndexViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = VectorIndex.objects.select_related("space")
    serializer_class = s.VectorIndexSerializer
    filterset_fields = ["space", "index_type"]


class AnnotationRoundViewSet(NeverDeleted, viewsets.ModelViewSet):
    """Rounds: created through `create_round` (tasks and gold with them), never deleted.

    Annotators see only the rounds they are members of, without gold settings; archived rounds
    are listed only with `?archived=true`.
    """

    queryset = AnnotationRound.objects.all()
    serializer_class = s.AnnotationRoundSerializer
    filterset_fields = ["kind", "state", "generation_batch", "archived"]
    permission_classes = [ActionPermission]
    action_permissions = {"archive": "curation.start_round", "unarchive": "curation.start_round"}
    never_deleted_reason = (
        "rounds are never deleted, they hold the tasks, annotations and judgements people "
        "made; archive it instead (POST /api/rounds/ID/archive/)"
    )

    def get_queryset(self) -> QuerySet[AnnotationRound]:
        rounds = visible_rounds(self.request.user)
        if self.action == "list" and "archived" not in self.request.query_params:
            rounds = rounds.filter(archived=False)
        return rounds

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        if sees_round_internals(self.request.user):
            return s.AnnotationRoundSerializer
        return s.AnnotatorRoundSerializer

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        members = data.pop("members", None)
        try:
            serializer.instance = create_round(**data, members=members, user=self.request.user)
        except ValueError as exc:
            raise serializers.ValidationError({"detail": str(exc)}) from exc

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        if serializer.instance.state != AnnotationRound.State.DRAFT and any(
            name in serializer.validated_data
            for name in ("kind", "generation_batch", "other_generation_batch")
        ):
            raise serializers.ValidationError(
                {"detail": "kind and batches are fixed once a round is pushed"}
            )
        serializer.save()

    @extend_schema(request=None, responses=s.AnnotationRoundSerializer)
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, pk: str | None = None) -> Response:
        round_ = set_archived(self.get_object(), True)
        return Response(s.AnnotationRoundSerializer(round_).data)

    @extend_schema(request=None, responses=s.AnnotationRoundSerializer)
    @action(detail=True, methods=["post"])
    def unarchive(self, request: Request, pk: str | None = None) -> Response:
        round_ = set_archived(self.get_object(), False)
        return Response(s.AnnotationRoundSerializer(round_).data)


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


class ScheduleViewSet(RefuseRecordDeletes, viewsets.ModelViewSet):
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
