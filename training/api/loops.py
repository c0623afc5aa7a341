"""API for retrain rounds: list and read them, start one, refresh human results."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from curation.api.permissions import ActionPermission
from curation.models import DatasetVersion, PromptSet, StyleDescriptor
from training.models import Checkpoint, RetrainRound, RoundStep
from training.services.evaluation import refresh_human_results
from training.services.loops import RoundConfigError, start_retrain_round


class RoundStepSerializer(serializers.ModelSerializer):
    seconds = serializers.FloatField(read_only=True)

    class Meta:
        model = RoundStep
        fields = [
            "name",
            "position",
            "status",
            "job",
            "started_at",
            "finished_at",
            "seconds",
            "output",
            "error",
        ]


class RetrainRoundSerializer(serializers.ModelSerializer):
    steps = RoundStepSerializer(many=True, read_only=True)
    scorer = serializers.SerializerMethodField(
        help_text="The evaluation CLIP behind the report's numbers: model, checksum, and "
        "`measurement: false` when its weights are random (the numbers then measure nothing)."
    )

    def get_scorer(self, round_: RetrainRound) -> dict | None:
        return (round_.report or {}).get("scorer")

    class Meta:
        model = RetrainRound
        fields = [
            "id",
            "name",
            "state",
            "recipe",
            "adapter",
            "hyperparameters",
            "base_checkpoint",
            "dataset_versions",
            "prompt_set",
            "eval_prompt_set",
            "style_descriptor",
            "seeds",
            "training_run",
            "checkpoint",
            "generation_batch",
            "report",
            "scorer",
            "steps",
            "created_at",
        ]
        read_only_fields = fields


class StartRoundSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, default="")
    base_checkpoint = serializers.PrimaryKeyRelatedField(queryset=Checkpoint.objects.all())
    dataset_versions = serializers.PrimaryKeyRelatedField(
        queryset=DatasetVersion.objects.all(), many=True
    )
    prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())
    eval_prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())
    style_descriptor = serializers.PrimaryKeyRelatedField(
        queryset=StyleDescriptor.objects.all(), required=False, allow_null=True, default=None
    )
    recipe = serializers.ChoiceField(
        choices=["style_tailoring", "sequential", "domain"], default="style_tailoring"
    )
    adapter = serializers.ChoiceField(
        choices=["lora", "full", "styledrop", "kv_lora", "styleinject"], default="lora"
    )
    hyperparameters = serializers.DictField(required=False, default=dict)
    seeds = serializers.ListField(child=serializers.IntegerField(), required=False, default=[0, 1])


class RetrainRoundViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = RetrainRound.objects.prefetch_related("steps", "dataset_versions")
    serializer_class = RetrainRoundSerializer
    filterset_fields = ["state", "recipe", "adapter"]
    permission_classes = [ActionPermission]
    action_permissions = {
        "start": "training.start_retrainround",
        "refresh": "training.change_retrainround",
    }

    @extend_schema(request=StartRoundSerializer, responses=RetrainRoundSerializer)
    @action(detail=False, methods=["post"])
    def start(self, request: Request) -> Response:
        payload = StartRoundSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            round_ = start_retrain_round(**payload.validated_data, user=request.user)
        except RoundConfigError as exc:
            return Response({"dataset_versions": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(RetrainRoundSerializer(round_).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=RetrainRoundSerializer)
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        round_ = self.get_object()
        refresh_human_results(round_)
        round_.refresh_from_db()
        return Response(RetrainRoundSerializer(round_).data)
