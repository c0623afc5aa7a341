from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework.routers import DefaultRouter

from curation.api import prompts, views
from curation.api.webhooks import labelstudio_webhook

router = DefaultRouter()
router.register("sources", views.SourceViewSet)
router.register("images", views.ImageViewSet)
router.register("ingest-batches", views.IngestBatchViewSet)
router.register("datasets", views.DatasetViewSet)
router.register("dataset-versions", views.DatasetVersionViewSet)
router.register("recipes", views.RecipeViewSet)
router.register("vector-indexes", views.VectorIndexViewSet)
router.register("style-descriptors", prompts.StyleDescriptorViewSet)
router.register("prompt-sets", prompts.PromptSetViewSet)
router.register("prompts", prompts.PromptViewSet)
router.register("rounds", views.AnnotationRoundViewSet)
router.register("jobs", views.JobViewSet)
router.register("schedules", views.ScheduleViewSet)

urlpatterns = [
    path("", include(router.urls)),
    path("labelstudio/webhook/", labelstudio_webhook, name="labelstudio-webhook"),
    path("training/", include("training.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("auth/", include("rest_framework.urls")),
]
