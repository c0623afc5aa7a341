"""Admin for curation, one module per area; this module also guards the RQ dashboard."""

from django.contrib import admin
from django.http import HttpRequest

from curation.admin import (  # noqa: F401
    annotations,
    annotators,
    datasets,
    images,
    jobs,
    prompts,
    retrieval,
    rounds,
)


def _restrict_rq_dashboard() -> None:
    """django_rq's queue dashboard lets any staff user in; it is an operator's page: admins only."""
    from django.core.exceptions import PermissionDenied
    from django_rq import models as rq_models
    from django_rq.admin import QueueAdmin

    from curation.roles import is_platform_admin

    class AdminOnlyQueueAdmin(QueueAdmin):
        def has_module_permission(self, request: HttpRequest) -> bool:
            return is_platform_admin(request.user)

        def get_urls(self):
            # Every queue page (stats, job detail, requeue, delete) gets the same admin-only guard.
            patterns = super().get_urls()
            for pattern in patterns:
                if hasattr(pattern, "callback"):
                    pattern.callback = _admins_only(pattern.callback)
            return patterns

    def _admins_only(view):
        from functools import wraps

        @wraps(view)
        def guarded(request: HttpRequest, *args, **kwargs):
            if request.user.is_staff and not is_platform_admin(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return guarded

    for model in list(admin.site._registry):
        if model._meta.app_label == "django_rq":
            admin.site.unregister(model)
            admin.site.register(model, AdminOnlyQueueAdmin)
    del rq_models


_restrict_rq_dashboard()
