"""Reuse the Django training fixtures (tiny base, frozen versions, run folders in tmp)."""

from tests.training.django.conftest import (  # noqa: F401
    models_dir,
    tiny_base,
    training_dirs,
    versions,
)
