"""API permissions: model permissions from the role groups, reads included.

DRF's DjangoModelPermissions lets any authenticated user read; here reading needs the model's
`view` permission, so an annotator cannot list images, datasets or jobs through the API.
"""

from rest_framework.permissions import DjangoModelPermissions


class RolePermission(DjangoModelPermissions):
    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }


class ActionPermission(RolePermission):
    """For custom actions: the view names the permission with `action_permissions`."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        needed = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        return not needed or request.user.has_perm(needed)
