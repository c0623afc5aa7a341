"""Admin page to register a base model from disk (the form behind `manage.py
register_base_model`): a diffusers folder or one .safetensors file with a config folder.
Refusals (unknown family, missing part, not a checkpoint) are shown on the form, by field."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from training.services.checkpoints import BaseModelRefused, register_base_model

REGISTER_PERMISSION = "training.add_checkpoint"


class RegisterBaseModelForm(forms.Form):
    name = forms.CharField(max_length=160)
    path = forms.CharField(
        max_length=1024,
        help_text="A diffusers folder on this server (fp16 variant files included), or one "
        ".safetensors file.",
    )
    config_folder = forms.CharField(
        max_length=1024,
        required=False,
        help_text="Only for a single file: a local diffusers folder of the same architecture.",
    )


class BaseModelRegistrationMixin(admin.ModelAdmin):
    change_list_template = "admin/training/checkpoint/change_list.html"

    def get_urls(self) -> list:
        return [
            path(
                "register-base-model/",
                self.admin_site.admin_view(self.register_base_model_view),
                name="training_checkpoint_register_base_model",
            ),
            *super().get_urls(),
        ]

    def register_base_model_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(REGISTER_PERMISSION):
            raise PermissionDenied
        form = RegisterBaseModelForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                checkpoint = register_base_model(
                    data["path"], data["name"], config_folder=data["config_folder"] or None
                )
            except BaseModelRefused as error:
                field = "config_folder" if "config_folder" in str(error) else "path"
                form.add_error("name" if str(error).startswith("name:") else field, str(error))
            else:
                config = checkpoint.config
                messages.success(
                    request,
                    f"Registered {checkpoint.name}: family {config['family']}, "
                    f"{config['size_bytes'] / 1e6:.1f} MB, sha256 {config['weights_sha256'][:16]}…",
                )
                return HttpResponseRedirect(
                    reverse("admin:training_checkpoint_change", args=[checkpoint.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Register a base model",
            "form": form,
        }
        return TemplateResponse(request, "admin/training/register_base_model.html", context)
