"""Signed, expiring URLs for media: no public media directory exists.

A URL carries the storage key signed with the project's SECRET_KEY and a timestamp; the view
refuses a tampered or expired signature. With S3 storage the view redirects to a pre-signed URL.

Links given to a Label Studio round (`round_url`) also carry the round and its media
generation: they work only while the round is pushed or annotating, not archived, and its
generation is unchanged. Closing the round or removing a member raises the generation
(curation.services.round_media), which ends every link issued before at once.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_GET

_SALT = "curation.media"


def sign_key(key: str, max_age: int | None = None, scope: list[int] | None = None) -> str:
    """A token carrying the key, its own lifetime and an optional [round id, generation]
    scope, signed with a timestamp."""
    max_age = settings.SIGNED_MEDIA_MAX_AGE if max_age is None else int(max_age)
    payload: list[Any] = [key, max_age, *(scope or [])]
    return signing.TimestampSigner(salt=_SALT).sign_object(payload, compress=True)


def signed_path(key: str, max_age: int | None = None) -> str:
    return reverse("media-signed", kwargs={"token": sign_key(key, max_age)})


def signed_url(key: str, max_age: int | None = None) -> str:
    """Absolute URL, for clients on other origins such as Label Studio's browser page."""
    return settings.PLATFORM_PUBLIC_URL.rstrip("/") + signed_path(key, max_age)


def round_url(key: str, round_: Any) -> str:
    """Absolute URL for a Label Studio task of `round_`: revoked with the round's generation."""
    token = sign_key(key, settings.LABEL_STUDIO_MEDIA_MAX_AGE, [round_.pk, round_.media_generation])
    return settings.PLATFORM_PUBLIC_URL.rstrip("/") + reverse(
        "media-signed", kwargs={"token": token}
    )


def _unsign(token: str) -> tuple[str, list[int]]:
    signer = signing.TimestampSigner(salt=_SALT)
    key, max_age, *scope = signer.unsign_object(token)
    # Second pass with the lifetime the token was issued with; the signature covers it.
    signer.unsign_object(token, max_age=max_age)
    return key, scope


def _round_link_revoked(scope: list[int]) -> bool:
    from curation.models import AnnotationRound

    round_id, generation = scope
    open_states = (AnnotationRound.State.PUSHED, AnnotationRound.State.ANNOTATING)
    return not AnnotationRound.objects.filter(
        pk=round_id, media_generation=generation, state__in=open_states, archived=False
    ).exists()


@require_GET
def serve_signed(request: HttpRequest, token: str) -> HttpResponse:
    try:
        key, scope = _unsign(token)
    except signing.SignatureExpired as exc:
        raise Http404("This media link has expired.") from exc
    except (signing.BadSignature, ValueError) as exc:
        raise Http404("Invalid media link.") from exc
    if scope and _round_link_revoked(scope):
        raise Http404("This media link was revoked: its round is closed or was re-issued.")
    if settings.STORAGE_BACKEND == "s3":
        return HttpResponseRedirect(default_storage.url(key))
    if not default_storage.exists(key):
        raise Http404("Media not found.")
    content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    response = FileResponse(default_storage.open(key, "rb"), content_type=content_type)
    # Label Studio's labeling page loads the image from the browser on another origin.
    response["Access-Control-Allow-Origin"] = settings.LABEL_STUDIO_URL.rstrip("/")
    response["Cache-Control"] = f"private, max-age={settings.SIGNED_MEDIA_MAX_AGE}"
    response["X-Content-Type-Options"] = "nosniff"
    return response
