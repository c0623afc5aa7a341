from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("curation.api.urls")),
    path("training/", include("training.urls")),
    path("", include("curation.urls")),
]
