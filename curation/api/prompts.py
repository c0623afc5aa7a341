"""Prompt sets, prompts and style descriptors; freeze, split and analyse as actions."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from curation.api import serializers as s
from curation.api.deletion import RefuseRecordDeletes
from curation.api.permissions import ActionPermission
from curation.models.prompts import FrozenPromptSetError, Prompt, PromptSet, StyleDescriptor
from curation.prompts.dedup import DEFAULT_THRESHOLD
from curation.services import prompts as prompt_services
from curation.services.jobs import enqueue_job


class _FrozenIsConflict:
    """A write the model refuses because the set is frozen is the client's conflict, not a 500."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, FrozenPromptSetError):
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        return super().handle_exception(exc)


class StyleDescriptorViewSet(RefuseRecordDeletes, viewsets.ModelViewSet):
    queryset = StyleDescriptor.objects.all()
    serializer_class = s.StyleDescriptorSerializer


class AnalyseRequest(serializers.Serializer):
    threshold = serializers.FloatField(default=DEFAULT_THRESHOLD, min_value=0.0, max_value=1.0)


class SplitRequest(AnalyseRequest):
    eval_fraction = serializers.FloatField(default=0.1, min_value=0.0, max_value=1.0)
    seed = serializers.IntegerField(default=0)

    def validate_eval_fraction(self, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise serializers.ValidationError("must be strictly between 0 and 1")
        return value


class PromptSetViewSet(RefuseRecordDeletes, _FrozenIsConflict, viewsets.ModelViewSet):
    queryset = PromptSet.objects.all()
    serializer_class = s.PromptSetSerializer
    filterset_fields = ["name", "purpose", "frozen"]
    permission_classes = [ActionPermission]
    action_permissions = {
        "freeze": "curation.freeze_promptset",
        "split": "curation.freeze_promptset",
        "analyse": "curation.change_promptset",
    }

    @extend_schema(request=None, responses=s.PromptSetSerializer)
    @action(detail=True, methods=["post"])
    def freeze(self, request: Request, pk: str | None = None) -> Response:
        try:
            prompt_set = prompt_services.freeze_prompt_set(self.get_object(), user=request.user)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.PromptSetSerializer(prompt_set).data)

    def _enqueue(self, request: Request, kind: str, form: type[serializers.Serializer]) -> Response:
        params = form(data=request.data)
        params.is_valid(raise_exception=True)
        prompt_set = self.get_object()
        job = enqueue_job(
            kind,
            params={"prompt_set_id": prompt_set.pk, **params.validated_data},
            user=request.user,
            target=prompt_set,
        )
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=AnalyseRequest, responses={202: s.JobSerializer})
    @action(detail=True, methods=["post"])
    def analyse(self, request: Request, pk: str | None = None) -> Response:
        return self._enqueue(request, "prompts.analyse", AnalyseRequest)

    @extend_schema(request=SplitRequest, responses={202: s.JobSerializer})
    @action(detail=True, methods=["post"])
    def split(self, request: Request, pk: str | None = None) -> Response:
        return self._enqueue(request, "prompts.split", SplitRequest)


class PromptViewSet(RefuseRecordDeletes, _FrozenIsConflict, viewsets.ModelViewSet):
    queryset = Prompt.objects.all()
    serializer_class = s.PromptSerializer
    filterset_fields = ["prompt_set", "category", "subject"]
