"""Registering base models from disk: CLI and admin form record family, size and checksum, and
refuse broken or unknown folders with the part named (no traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from training.models import Checkpoint


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory) -> Path:
    from training.engine.tiny import save_tiny_base_model

    return save_tiny_base_model(tmp_path_factory.mktemp("sdxl") / "base", family="sdxl")


@pytest.mark.django_db
def test_command_registers_a_folder_with_family_size_and_checksum(tiny_sdxl, capsys):
    call_command("register_base_model", str(tiny_sdxl), "--name", "my-sdxl")
    checkpoint = Checkpoint.objects.get(name="my-sdxl")
    config = checkpoint.config
    assert config["family"] == "sdxl" and config["variant"] is None
    weights = sum(f.stat().st_size for f in tiny_sdxl.glob("*/*.safetensors"))
    assert config["size_bytes"] == weights
    assert len(config["weights_sha256"]) == 64
    assert "family sdxl" in capsys.readouterr().out
    # the same weights give the same checksum; changed weights another
    call_command("register_base_model", str(tiny_sdxl), "--name", "again")
    assert Checkpoint.objects.get(name="again").config["weights_sha256"] == config["weights_sha256"]


@pytest.mark.django_db
def test_command_refuses_broken_unknown_and_configless_inputs(tiny_sdxl, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sdxl, broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(CommandError, match=r"missing folder text_encoder_2/"):
        call_command("register_base_model", str(broken), "--name", "broken")
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanPipeline"}))
    with pytest.raises(CommandError, match="'WanPipeline' is not a family the engine trains"):
        call_command("register_base_model", str(broken), "--name", "broken")
    import torch
    from safetensors.torch import save_file

    single = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, single)
    with pytest.raises(CommandError, match="needs config_folder="):
        call_command("register_base_model", str(single), "--name", "single")
    assert not Checkpoint.objects.filter(name__in=["broken", "single"]).exists()


@pytest.mark.django_db
def test_admin_form_registers_and_shows_refusals_on_the_form(
    client, admin_user, tiny_sdxl, tmp_path
):
    client.force_login(admin_user)
    url = reverse("admin:training_checkpoint_register_base_model")
    assert url in client.get(reverse("admin:training_checkpoint_changelist")).content.decode()
    (tmp_path / "empty").mkdir()
    page = client.post(url, {"name": "x", "path": str(tmp_path / "empty")})
    assert page.status_code == 200 and "missing model_index.json" in page.content.decode()
    assert not Checkpoint.objects.filter(name="x").exists()
    done = client.post(url, {"name": "from-admin", "path": str(tiny_sdxl)})
    checkpoint = Checkpoint.objects.get(name="from-admin")
    assert done.status_code == 302 and checkpoint.config["family"] == "sdxl"
