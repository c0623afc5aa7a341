"""Label Studio webhook receiver: authenticate, store the raw payload, answer at once.

Label Studio posts each event synchronously with a 1 s timeout and never retries, so this view
does no parsing: it keeps the raw payload and leaves the work to a job. Reconcile jobs cover any
event that never arrives.
"""

from __future__ import annotations

import hmac
import json

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from curation.labelstudio.parsing import SECRET_HEADER
from curation.models import WebhookEvent


@csrf_exempt
@require_POST
def labelstudio_webhook(request: HttpRequest) -> JsonResponse:
    expected = settings.LABEL_STUDIO_WEBHOOK_SECRET
    given = request.headers.get(SECRET_HEADER, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return JsonResponse({"detail": "missing or wrong webhook secret"}, status=403)
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        payload = {"unparsed_body": request.body.decode("utf-8", "replace")[:1_000_000]}
    action = payload.get("action", "") if isinstance(payload, dict) else ""
    event = WebhookEvent.objects.create(action=str(action)[:64], payload=payload)
    transaction.on_commit(lambda: _enqueue_processing(event.pk))
    return JsonResponse({"received": event.pk})


def _enqueue_processing(event_id: int) -> None:
    from curation.services.jobs import enqueue_job

    # No handler import here (it would load torch on the first request); the worker knows it.
    enqueue_job(
        "labelstudio.webhook",
        params={"event_id": event_id},
        queue="default",
        max_attempts=5,
        validate=False,
    )
