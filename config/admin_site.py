"""The admin site, its index grouped in the order the loop runs rather than by Django app.

A data lead reads the index top to bottom as the loop: the image pool, recipes, dataset
versions, rating rounds, training, reports; operator pages (jobs, users) come last. A model no
group names (one added later) still shows, under its app, after the groups.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest

# (group label, slug, [app_label.model_name, ...]) in the order of the loop.
LOOP_GROUPS: list[tuple[str, str, list[str]]] = [
    (
        "1 · Image pool",
        "pool",
        [
            "curation.source",
            "curation.ingestbatch",
            "curation.image",
            "curation.imagefeatures",
            "curation.refusal",
            "curation.embeddingspace",
            "curation.embeddingshard",
            "curation.vectorindex",
        ],
    ),
    ("2 · Recipes", "recipes", ["curation.recipe", "curation.reciperun", "curation.recipescore"]),
    ("3 · Dataset versions", "versions", ["curation.dataset", "curation.datasetversion"]),
    (
        "4 · Rating rounds",
        "rounds",
        [
            "curation.annotationround",
            "curation.labeltask",
            "curation.annotation",
            "curation.judgement",
            "curation.annotatorroundstats",
            "curation.annotatoraccount",
            "curation.webhookevent",
        ],
    ),
    (
        "5 · Training",
        "training",
        [
            "curation.styledescriptor",
            "curation.promptset",
            "curation.prompt",
            "training.trainingrun",
            "training.checkpoint",
            "training.generationbatch",
            "training.generation",
            "training.retrainround",
        ],
    ),
    ("6 · Reports", "reports", []),
    (
        "Operations",
        "operations",
        [
            "curation.job",
            "curation.schedule",
            "django_tasks_database.dbtaskresult",
            "django_rq.dashboard",
            "auth.user",
            "auth.group",
            "authtoken.tokenproxy",
        ],
    ),
]


class PlatformAdminSite(admin.AdminSite):
    site_header = "Sticker curation platform"
    site_title = "Sticker curation"
    index_title = "Curate, train, rate — in the order of the loop"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps  # an app's own index page keeps Django's layout
        by_key: dict[str, dict[str, Any]] = {}
        app_of: dict[str, dict[str, Any]] = {}
        for app in apps:
            for entry in app["models"]:
                key = f"{app['app_label']}.{entry['object_name'].lower()}"
                by_key[key] = entry
                app_of[key] = app
        grouped: list[dict] = []
        placed: set[str] = set()
        for label, slug, keys in LOOP_GROUPS:
            models = [by_key[k] for k in keys if k in by_key]
            placed.update(k for k in keys if k in by_key)
            if slug == "reports":
                models = self._report_entries(by_key)
            if not models:
                continue
            first = app_of.get(next((k for k in keys if k in by_key), ""))
            grouped.append(
                {
                    "name": label,
                    "app_label": f"loop-{slug}",
                    "app_url": first["app_url"] if first else "",
                    "has_module_perms": True,
                    "models": models,
                }
            )
        for app in apps:
            rest = [
                e
                for e in app["models"]
                if f"{app['app_label']}.{e['object_name'].lower()}" not in placed
            ]
            if rest:
                grouped.append({**app, "models": rest})
        return grouped

    @staticmethod
    def _report_entries(by_key: dict[str, dict[str, Any]]) -> list[dict]:
        """Reports are pages of retrain rounds: the rounds that have one, from their list."""
        rounds = by_key.get("training.retrainround")
        if rounds is None or not rounds.get("admin_url"):
            return []
        return [
            {
                **rounds,
                "name": "Round reports (finished retrain rounds)",
                "admin_url": f"{rounds['admin_url']}?state__in=waiting,done",
                "add_url": None,
            }
        ]


class PlatformAdminConfig(AdminConfig):
    default_site = "config.admin_site.PlatformAdminSite"
