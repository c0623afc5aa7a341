from django.urls import include, path
from rest_framework.routers import DefaultRouter

from training.api import views

router = DefaultRouter()
router.register("runs", views.TrainingRunViewSet)
router.register("checkpoints", views.CheckpointViewSet)
router.register("generation-batches", views.GenerationBatchViewSet)
router.register("generations", views.GenerationViewSet)

urlpatterns = [path("", include(router.urls))]
