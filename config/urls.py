from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("curation.api.urls")),
    path("training/", include("training.urls")),
    # Browsers ask for /favicon.ico on pages without a <link rel="icon"> (API JSON, files).
    path("favicon.ico", RedirectView.as_view(url=static("platform/favicon.svg"), permanent=True)),
    path("", include("curation.urls")),
]
