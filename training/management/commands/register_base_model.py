"""`manage.py register_base_model PATH --name NAME [--config-folder DIR]`: a local base model
(diffusers folder, fp16 variant included, or one .safetensors file with a config folder)
becomes a Checkpoint that training runs can start from."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.services.checkpoints import BaseModelRefused, register_base_model


class Command(BaseCommand):
    help = "Register a local base model (diffusers folder or single .safetensors file)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="a diffusers folder, or a single .safetensors file")
        parser.add_argument("--name", required=True, help="the Checkpoint's name")
        parser.add_argument(
            "--config-folder",
            help="for a single file: a local diffusers folder of the same architecture",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            checkpoint = register_base_model(
                options["path"], options["name"], config_folder=options["config_folder"]
            )
        except BaseModelRefused as error:
            raise CommandError(str(error)) from error
        config = checkpoint.config
        self.stdout.write(
            f"registered {checkpoint.name} (id {checkpoint.pk}): family {config['family']}, "
            f"{config['size_bytes'] / 1e6:.1f} MB of weights"
            + (f" ({config['variant']} variant)" if config.get("variant") else "")
            + f", sha256 {config['weights_sha256'][:16]}…, at {checkpoint.path}"
        )
