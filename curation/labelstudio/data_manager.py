"""The project's data-manager tabs (Label Studio "views"): which task columns people see.

Views belong to the project, not to a user: every account in the organization sees the same tabs,
so hiding the platform's internal columns (task_key, ids, batches) in them hides them from every
annotator. Label Studio's frontend only creates a default tab when a project has none, so the
platform creates it first. A person can still show a hidden column again from the column menu:
this is tidiness, not secrecy (task data is readable by every member in Community anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from curation.labelstudio.client import LabelStudioError

if TYPE_CHECKING:  # annotations only: importing the SDK client costs a second at start-up
    from label_studio_sdk import LabelStudio

TAB_TITLE = "Tasks"


def column_id(data_key: str) -> str:
    return f"tasks:data.{data_key}"


def _default_tab(hidden: list[str]) -> dict[str, Any]:
    # The shape Label Studio's own frontend saves for a new tab.
    return {
        "title": TAB_TITLE,
        "type": "list",
        "target": "tasks",
        "filters": {"conjunction": "and", "items": []},
        "ordering": [],
        "hiddenColumns": {"explore": hidden, "labeling": hidden},
    }


def hide_data_columns(sdk: LabelStudio, project_id: int, data_keys: Iterable[str]) -> int:
    """Hide these task-data columns in every tab of the project (creating the first tab);
    returns how many tabs were written. Columns hidden by someone else stay hidden."""
    wanted = sorted({column_id(k) for k in data_keys})
    http = sdk._client_wrapper.httpx_client
    response = http.request("api/dm/views/", method="GET", params={"project": project_id})
    _check(response, f"listing data-manager tabs of project {project_id}")
    tabs = response.json()
    if not tabs:
        created = http.request(
            "api/dm/views/",
            method="POST",
            json={"project": project_id, "data": _default_tab(wanted)},
        )
        _check(created, f"creating the data-manager tab of project {project_id}")
        return 1
    written = 0
    for tab in tabs:
        data = dict(tab.get("data") or {})
        hidden = dict(data.get("hiddenColumns") or {})
        changed = False
        for mode in ("explore", "labeling"):
            current = list(hidden.get(mode) or [])
            missing = [c for c in wanted if c not in current]
            if missing:
                hidden[mode] = current + missing
                changed = True
        if not changed:
            continue
        data["hiddenColumns"] = hidden
        updated = http.request(
            f"api/dm/views/{tab['id']}/",
            method="PATCH",
            json={"project": project_id, "data": data},
        )
        _check(updated, f"updating data-manager tab {tab['id']} of project {project_id}")
        written += 1
    return written


def _check(response: Any, what: str) -> None:
    if response.status_code >= 300:
        raise LabelStudioError(f"{what} -> {response.status_code}: {response.text[:300]}")
