from django.urls import include, path
from django.views.generic import RedirectView

from curation import media

urlpatterns = [
    path("media/s/<str:token>", media.serve_signed, name="media-signed"),
    path("curation/review/", include("curation.review_urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
