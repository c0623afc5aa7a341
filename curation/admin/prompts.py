"""Admin pages: prompts."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from curation import models as m
from curation.admin_base import PlatformAdmin


@admin.register(m.StyleDescriptor)
class StyleDescriptorAdmin(PlatformAdmin):
    list_display = ["name", "prefix", "suffix"]
    search_fields = ["name", "prefix", "suffix"]


class PromptInline(admin.TabularInline):
    model = m.Prompt
    extra = 0
    fields = ["text", "category", "subject", "tags"]
    max_num = 500


@admin.register(m.PromptSet)
class PromptSetAdmin(PlatformAdmin):
    list_display = ["name", "version", "purpose", "frozen", "created_at"]
    list_filter = ["purpose", "frozen"]
    search_fields = ["name", "description"]
    inlines = [PromptInline]

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.PromptSet | None = None
    ) -> list[str]:
        if obj and obj.frozen:
            return [f.name for f in self.model._meta.fields]
        return ["frozen", "stats"]


@admin.register(m.Prompt)
class PromptAdmin(PlatformAdmin):
    list_display = ["text", "prompt_set", "category", "subject"]
    list_filter = ["category", "prompt_set"]
    search_fields = ["text", "subject"]
    list_select_related = ["prompt_set"]
