"""Routes of the review grid, included under /curation/review/ by curation.urls."""

from django.urls import path

from curation.views import review

urlpatterns = [
    path("<int:run_id>/", review.review_grid, name="curation-review"),
    path("<int:run_id>/decide/", review.review_decide, name="curation-review-decide"),
    path(
        "<int:run_id>/accept-above/",
        review.review_accept_above,
        name="curation-review-accept-above",
    ),
    path("<int:run_id>/freeze/", review.review_freeze, name="curation-review-freeze"),
]
