"""The part of the Label Studio client every other part uses: the SDK, raw JSON reads, paging."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from curation.labelstudio.auth import make_sdk
from curation.labelstudio.errors import LabelStudioAuthError, LabelStudioError

__all__ = ["TASK_KEY", "LabelStudioAuthError", "LabelStudioBase", "LabelStudioError", "dm_datetime"]

TASK_KEY = "task_key"
# Label Studio's data-manager datetime filter format (data_manager/managers.py).
_DM_DATETIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def dm_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("watermark: must be timezone-aware (Label Studio stores UTC)")
    return value.astimezone(UTC).strftime(_DM_DATETIME)


class LabelStudioBase:
    """One Label Studio server as the platform sees it (admin token unless said otherwise)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        source: str = "LABEL_STUDIO_API_KEY",
    ) -> None:
        """`api_key`: a personal access token or a legacy token; `source` names where it came
        from, for the error when Label Studio refuses it."""
        self.base_url = base_url.rstrip("/")
        self.sdk, self.auth = make_sdk(self.base_url, api_key, source=source, timeout=timeout)

    def _get_json(self, path: str, params: Mapping[str, Any]) -> Any:
        # The SDK's typed pagers build a pydantic model per task (slow at 20k tasks and lossy for
        # fields it does not know); its own authenticated httpx client returns the raw JSON.
        response = self.sdk._client_wrapper.httpx_client.request(
            path, method="GET", params=dict(params)
        )
        if response.status_code != 200:
            shown = {
                k: (v if not isinstance(v, list) else f"<{len(v)} values>")
                for k, v in params.items()
            }
            raise LabelStudioError(
                f"GET {path} {shown} -> {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def _task_pages(
        self,
        project_id: int,
        *,
        filters: list[dict[str, Any]],
        fields_all: bool,
        include: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of tasks ordered by id, paging by `id > last id` (keyset).

        Offset paging over a set that changes while it is read can skip a row (a deleted task
        shifts the rest left); keyset paging cannot.
        """
        last_id = 0
        while True:
            items = [
                *filters,
                {
                    "filter": "filter:tasks:id",
                    "operator": "greater",
                    "type": "Number",
                    "value": last_id,
                },
            ]
            query = {
                "filters": {"conjunction": "and", "items": items},
                "ordering": ["tasks:id"],
            }
            params: dict[str, Any] = {
                "project": project_id,
                "page": 1,
                "page_size": page_size,
                "query": json.dumps(query),
                "fields": "all" if fields_all else "task_only",
                # Data URIs are ours (signed platform URLs); never let Label Studio rewrite them.
                "resolve_uri": "false",
            }
            if include:
                params["include"] = include
            try:
                payload = self._get_json("api/tasks/", params)
            except LabelStudioError as exc:
                if "404" in str(exc) and "Invalid page" in str(exc):
                    return
                raise
            tasks = payload.get("tasks", []) if isinstance(payload, dict) else payload
            if not tasks:
                return
            yield tasks
            if len(tasks) < page_size:
                return
            last_id = max(int(t["id"]) for t in tasks)
