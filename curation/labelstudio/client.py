"""The platform's Label Studio client, over `label-studio-sdk` 2.1.2.

It is assembled from parts, each idempotent so a job can be retried after any crash:
`projects.py` (projects, tasks, webhooks) and `pull.py` (reading annotations back as the
record); annotator accounts live in `accounts.py`.
"""

from __future__ import annotations

from curation.labelstudio.base import TASK_KEY, LabelStudioAuthError, LabelStudioError
from curation.labelstudio.projects import ProjectsMixin, PushResult
from curation.labelstudio.pull import Pull, PullMixin, TaskRead

__all__ = [
    "TASK_KEY",
    "LabelStudioAuthError",
    "LabelStudioClient",
    "LabelStudioError",
    "Pull",
    "PushResult",
    "TaskRead",
]


class LabelStudioClient(ProjectsMixin, PullMixin):
    """One Label Studio server as the platform sees it (admin token unless said otherwise)."""
