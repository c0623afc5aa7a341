"""Admin pages: prompts, prompt sets (import, analyse, dedup, freeze, split) and style descriptors."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from curation import models as m
from curation.admin_base import PlatformAdmin
from curation.prompts.dedup import DEFAULT_THRESHOLD
from curation.prompts.importers import FORMATS, PromptImportError


@admin.register(m.StyleDescriptor)
class StyleDescriptorAdmin(PlatformAdmin):
    list_display = ["name", "prefix", "suffix"]
    search_fields = ["name", "prefix", "suffix"]


def _frozen(obj: m.PromptSet | m.Prompt | None) -> bool:
    if isinstance(obj, m.Prompt):
        return obj.prompt_set.frozen
    return bool(obj and obj.frozen)


class PromptInline(admin.TabularInline):
    model = m.Prompt
    fk_name = "prompt_set"
    extra = 0
    fields = ["text", "category", "subject", "tags", "slots", "near_duplicate_of"]
    readonly_fields = ["slots", "near_duplicate_of"]
    max_num = 500

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("near_duplicate_of")

    def has_add_permission(self, request: HttpRequest, obj: m.PromptSet | None = None) -> bool:
        return not _frozen(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: m.PromptSet | None = None) -> bool:
        return not _frozen(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: m.PromptSet | None = None) -> bool:
        return not _frozen(obj) and super().has_delete_permission(request, obj)


class PromptImportForm(forms.Form):
    file = forms.FileField()
    name = forms.CharField(max_length=120, help_text="Existing name: the import becomes v N+1.")
    purpose = forms.ChoiceField(choices=m.PromptSet.Purpose.choices)
    format = forms.ChoiceField(
        choices=[("", "from the file suffix"), *((f, f) for f in FORMATS)], required=False
    )


@admin.register(m.PromptSet)
class PromptSetAdmin(PlatformAdmin):
    list_display = ["name", "version", "purpose", "frozen", "prompt_count", "created_at"]
    list_filter = ["purpose", "frozen"]
    search_fields = ["name", "description"]
    inlines = [PromptInline]
    actions = ["analyse", "remove_duplicates", "freeze", "split"]
    change_list_template = "admin/curation/promptset/change_list.html"

    @admin.display(description="prompts")
    def prompt_count(self, obj: m.PromptSet) -> int:
        return obj.prompts.count()

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.PromptSet | None = None
    ) -> list[str]:
        if obj and obj.frozen:
            return [f.name for f in self.model._meta.fields] + ["analysis"]
        return ["version", "frozen", "parent", "analysis"]

    def get_exclude(self, request: HttpRequest, obj: m.PromptSet | None = None) -> list[str]:
        return ["stats"]

    def has_delete_permission(self, request: HttpRequest, obj: m.PromptSet | None = None) -> bool:
        return not _frozen(obj) and super().has_delete_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: m.PromptSet, form: object, change: bool
    ) -> None:
        from curation.services.prompts import next_version

        if not change:
            obj.version = next_version(obj.name)
        super().save_model(request, obj, form, change)

    @admin.display(description="analysis")
    def analysis(self, obj: m.PromptSet) -> str:
        info = (obj.stats or {}).get("analysis")
        if not info:
            return "not analysed yet (action: Analyse)"
        spread = info.get("diversity") or {}
        groups = format_html_join(
            "",
            "<li><b>{}</b> prompts: {}</li>",
            ((g["size"], " | ".join(g["texts"])) for g in info.get("largest_groups", [])),
        )
        return format_html(
            "{} prompts at cosine &ge; {}: {} exact groups, {} near-duplicate groups, "
            "{} duplicates{}.<br>Diversity: mean pairwise distance {}, cluster coverage {}, "
            "evenness {} ({} clusters).<br>Largest near-duplicate groups:<ul>{}</ul>",
            info["prompts"],
            info["threshold"],
            info["exact_groups"],
            info["near_groups"],
            info["duplicates"],
            f" ({info['removed']} removed)" if info.get("removed") else "",
            f"{spread.get('mean_pairwise_distance', 0):.3f}",
            f"{spread.get('cluster_coverage', 0):.2f}",
            f"{spread.get('cluster_evenness', 0):.2f}",
            spread.get("n_clusters", 0),
            groups or format_html("<li>none</li>"),
        )

    def has_freeze_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.freeze_promptset")

    def _enqueue(self, request: HttpRequest, queryset: QuerySet, kind: str, **params) -> None:
        from curation.services.jobs import enqueue_job

        for prompt_set in queryset:
            job = enqueue_job(
                kind,
                params={"prompt_set_id": prompt_set.pk, **params},
                user=request.user,
                target=prompt_set,
            )
            self.message_user(request, f"{prompt_set}: job #{job.pk} ({kind}) queued.")

    @admin.action(
        description="Analyse: embeddings, near-duplicates, diversity", permissions=["change"]
    )
    def analyse(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._enqueue(request, queryset, "prompts.analyse", threshold=DEFAULT_THRESHOLD)

    @admin.action(description="Remove flagged near-duplicates (drafts)", permissions=["change"])
    def remove_duplicates(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.prompts import remove_near_duplicates

        for prompt_set in queryset:
            try:
                removed = remove_near_duplicates(prompt_set)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{prompt_set}: {removed} near-duplicates removed.")

    @admin.action(description="Freeze selected prompt sets", permissions=["freeze"])
    def freeze(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.prompts import freeze_prompt_set

        for prompt_set in queryset:
            try:
                freeze_prompt_set(prompt_set, user=request.user)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{prompt_set} frozen.")

    @admin.action(
        description="Split into generation + held-out evaluation (10%%, leak-free)",
        permissions=["freeze"],
    )
    def split(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._enqueue(
            request,
            queryset,
            "prompts.split",
            eval_fraction=0.1,
            seed=0,
            threshold=DEFAULT_THRESHOLD,
        )

    def get_urls(self):
        view = self.admin_site.admin_view(self.import_view)
        return [path("import/", view, name="curation_promptset_import"), *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        from curation.services.prompts import import_prompt_file

        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PromptImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                prompt_set, row_errors = import_prompt_file(
                    upload.read(),
                    form.cleaned_data["name"],
                    fmt=form.cleaned_data["format"] or None,
                    purpose=form.cleaned_data["purpose"],
                    user=request.user,
                    filename=Path(upload.name).name,
                )
            except PromptImportError as exc:
                errors = [str(e) for e in getattr(exc, "errors", [])] or [str(exc)]
                self.message_user(request, str(exc), messages.ERROR)
            else:
                level = messages.WARNING if row_errors else messages.SUCCESS
                self.message_user(
                    request,
                    f"{prompt_set}: {prompt_set.prompts.count()} prompts imported, "
                    f"{len(row_errors)} rows refused: "
                    + "; ".join(str(e) for e in row_errors[:20]),
                    level,
                )
                return HttpResponseRedirect(
                    reverse("admin:curation_promptset_change", args=[prompt_set.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Import prompt file",
            "opts": self.model._meta,
            "form": form,
            "errors": errors,
        }
        return TemplateResponse(request, "admin/curation/promptset/import_form.html", context)


@admin.register(m.Prompt)
class PromptAdmin(PlatformAdmin):
    list_display = ["text", "prompt_set", "category", "subject", "near_duplicate_of"]
    list_filter = ["category", "prompt_set"]
    search_fields = ["text", "subject"]
    list_select_related = ["prompt_set", "near_duplicate_of"]
    raw_id_fields = ["near_duplicate_of"]

    def get_readonly_fields(self, request: HttpRequest, obj: m.Prompt | None = None) -> list[str]:
        if obj and _frozen(obj):
            return [f.name for f in self.model._meta.fields]
        return ["near_duplicate_of"]

    def has_delete_permission(self, request: HttpRequest, obj: m.Prompt | None = None) -> bool:
        return not (obj and _frozen(obj)) and super().has_delete_permission(request, obj)
