"""DELETE through the API: refused for the record (405) and for what cascades into it (409).

Both answers come before the role check, so every role (an admin included) gets the same
refusal and its reason instead of a 403 that would suggest someone else could do it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException, MethodNotAllowed
from rest_framework.request import Request

from curation.selectors.deletion import deletion_blocker


class DeleteConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "delete_refused"


def _authenticated_delete(view: Any, request: Request) -> bool:
    if request.method != "DELETE":
        return False
    view.perform_authentication(request)
    return bool(request.user and request.user.is_authenticated)


class RefuseRecordDeletes:
    """For ModelViewSets: a delete that would remove any of the record answers 409 with why."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if _authenticated_delete(self, request):
            instance = self.get_object()  # type: ignore[attr-defined]
            reason = deletion_blocker(instance)
            if reason is not None:
                raise DeleteConflict(
                    f"{instance._meta.verbose_name} {instance.pk} is not deleted: {reason}."
                )
        super().initial(request, *args, **kwargs)  # type: ignore[misc]


class NeverDeleted:
    """For the record itself: DELETE is not a method these resources have (405), with why."""

    never_deleted_reason = "this is part of the annotation record and is never deleted"

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if _authenticated_delete(self, request):
            raise MethodNotAllowed("DELETE", detail=f"DELETE refused: {self.never_deleted_reason}.")
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
