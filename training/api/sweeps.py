"""API for trade-off sweeps: list and read them, start one, cancel and resume it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from curation.api.permissions import ActionPermission
from curation.api.serializers import JobSerializer
from curation.models import DatasetVersion, PromptSet, StyleDescriptor
from training.models import Checkpoint, RetrainRound, TradeoffSweep
from training.services import sweeps

START = "training.start_tradeoffsweep"


class TradeoffSweepSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField(
        help_text="The job's progress: done of total (per mille), its message and status."
    )

    def get_progress(self, sweep: TradeoffSweep) -> dict | None:
        job = sweep.job
        if job is None:
            return None
        return {
            "job": job.pk,
            "status": job.status,
            "done": job.progress_done,
            "total": job.progress_total,
            "message": job.progress_message,
        }

    class Meta:
        model = TradeoffSweep
        fields = [
            "id",
            "name",
            "status",
            "base_checkpoint",
            "dataset_versions",
            "eval_prompt_set",
            "style_descriptor",
            "retrain_round",
            "seeds",
            "settings",
            "arms",
            "report",
            "error",
            "job",
            "progress",
            "created_at",
        ]
        read_only_fields = fields


class SweepSettingsSerializer(serializers.Serializer):
    t_s_values = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=999), required=False
    )
    mix_ratios = serializers.ListField(child=serializers.FloatField(), required=False)
    adapter = serializers.ChoiceField(choices=sweeps.SWEEP_ADAPTERS, required=False)
    hyperparameters = serializers.DictField(required=False)


class StartSweepSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, default="")
    retrain_round = serializers.PrimaryKeyRelatedField(
        queryset=RetrainRound.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="Take base checkpoint, versions, eval prompts and seeds from this round (its "
        "report then shows the sweep); the fields below override them.",
    )
    base_checkpoint = serializers.PrimaryKeyRelatedField(
        queryset=Checkpoint.objects.all(), required=False
    )
    dataset_versions = serializers.PrimaryKeyRelatedField(
        queryset=DatasetVersion.objects.all(), many=True, required=False
    )
    eval_prompt_set = serializers.PrimaryKeyRelatedField(
        queryset=PromptSet.objects.all(), required=False
    )
    style_descriptor = serializers.PrimaryKeyRelatedField(
        queryset=StyleDescriptor.objects.all(), required=False, allow_null=True
    )
    seeds = serializers.ListField(child=serializers.IntegerField(), required=False)
    settings = SweepSettingsSerializer(required=False)

    def validate(self, data: dict) -> dict:
        round_ = data.get("retrain_round")
        if round_ is not None:
            data.setdefault("base_checkpoint", round_.base_checkpoint)
            data.setdefault("dataset_versions", list(round_.dataset_versions.all()))
            data.setdefault("eval_prompt_set", round_.eval_prompt_set)
            data.setdefault("seeds", round_.seeds or [0, 1])
            data.setdefault("style_descriptor", round_.style_descriptor)
        missing = [
            f for f in ("base_checkpoint", "dataset_versions", "eval_prompt_set") if f not in data
        ]
        if missing:
            raise serializers.ValidationError(
                {f: ["required unless retrain_round gives it"] for f in missing}
            )
        return data


class TradeoffSweepViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = TradeoffSweep.objects.select_related("job").prefetch_related("dataset_versions")
    serializer_class = TradeoffSweepSerializer
    filterset_fields = ["status", "retrain_round"]
    permission_classes = [ActionPermission]
    action_permissions = {"start": START, "cancel": START, "resume": START}

    @extend_schema(request=StartSweepSerializer, responses=TradeoffSweepSerializer)
    @action(detail=False, methods=["post"])
    def start(self, request: Request) -> Response:
        payload = StartSweepSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        try:
            sweep = sweeps.start_tradeoff_sweep(
                base_checkpoint=data["base_checkpoint"],
                dataset_versions=data["dataset_versions"],
                eval_prompt_set=data["eval_prompt_set"],
                seeds=data.get("seeds") or [0, 1],
                settings=data.get("settings"),
                style_descriptor=data.get("style_descriptor"),
                retrain_round=data.get("retrain_round"),
                user=request.user,
                name=data.get("name", ""),
            )
        except sweeps.SweepConfigError as error:
            return Response({error.field: [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(TradeoffSweepSerializer(sweep).data, status=status.HTTP_201_CREATED)

    def _act(self, what: str) -> Response:
        sweep = self.get_object()
        try:
            job = sweeps.cancel_sweep(sweep) if what == "cancel" else sweeps.resume_sweep(sweep)
        except sweeps.SweepNotRetryable as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return self._act("cancel")

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        return self._act("resume")
