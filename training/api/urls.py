from django.urls import include, path
from rest_framework.routers import DefaultRouter

from training.api import views
from training.api.loops import RetrainRoundViewSet
from training.api.sweeps import TradeoffSweepViewSet

router = DefaultRouter()
router.register("runs", views.TrainingRunViewSet)
router.register("checkpoints", views.CheckpointViewSet)
router.register("generation-batches", views.GenerationBatchViewSet)
router.register("generations", views.GenerationViewSet)
router.register("retrain-rounds", RetrainRoundViewSet)
router.register("tradeoff-sweeps", TradeoffSweepViewSet)

urlpatterns = [path("", include(router.urls))]
