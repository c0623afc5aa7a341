"""The three roles as groups with permissions; kept in sync by a data migration and post_migrate.

- annotator: rates in Label Studio; may only see the rounds they work on, no admin, no writes.
- data_lead: curates images, recipes, datasets and versions, freezes versions, starts rounds,
  training runs and generation; cancels and retries jobs. No user or group management.
- admin: everything, including users, groups and API tokens.
"""

from __future__ import annotations

from typing import Any

ANNOTATOR = "annotator"
DATA_LEAD = "data_lead"
ADMIN = "admin"
ROLES = (ANNOTATOR, DATA_LEAD, ADMIN)
STAFF_ROLES = (DATA_LEAD, ADMIN)

PLATFORM_APPS = ("curation", "training")
ANNOTATOR_PERMISSIONS = {("curation", "view_annotationround"), ("curation", "view_labeltask")}
# Rows a data lead must not delete: they are history (raw annotations, webhook events) or lineage.
DATA_LEAD_NO_DELETE = {
    "annotation",
    "annotationround",
    "annotationversion",
    "annotatorroundstats",
    "golditem",
    "labeltask",
    "judgement",
    "roundnotice",
    "webhookevent",
    "datasetversion",
    "checkpoint",
    "job",
    # A retrain round and its steps are the lineage its report and checkpoints point back to.
    "retrainround",
    "roundstep",
}


def sync_roles(apps: Any = None) -> None:
    """Create or update the role groups; `apps` is the migration state or None for live models."""
    if apps is None:
        from django.apps import apps as live_apps

        apps = live_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    platform = Permission.objects.filter(content_type__app_label__in=PLATFORM_APPS)
    lead = [
        p
        for p in platform.select_related("content_type")
        if not (p.codename.startswith("delete_") and p.content_type.model in DATA_LEAD_NO_DELETE)
    ]
    annotator = [
        p
        for p in platform.select_related("content_type")
        if (p.content_type.app_label, p.codename) in ANNOTATOR_PERMISSIONS
    ]
    everything = list(Permission.objects.all())

    for name, perms in ((ANNOTATOR, annotator), (DATA_LEAD, lead), (ADMIN, everything)):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(perms)


def is_platform_admin(user: Any) -> bool:
    """Superusers and members of the admin group: the only ones who run operator pages."""
    if not getattr(user, "is_active", False):
        return False
    return bool(user.is_superuser or user.groups.filter(name=ADMIN).exists())
