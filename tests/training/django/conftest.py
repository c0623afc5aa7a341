"""Frozen dataset versions built from small PNGs, a tiny base checkpoint, and run folders in tmp."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from curation.models import Dataset, DatasetVersion, Image, Prompt, PromptSet, Source
from curation.services.storage import store_bytes
from curation.services.versions import add_items, create_draft_version, freeze_version


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def training_dirs(settings, models_dir: Path, tmp_path: Path) -> dict[str, Path]:
    settings.TRAINING_MODELS_DIR = models_dir  # the tiny base is written once per session
    settings.TRAINING_RUNS_DIR = tmp_path / "runs"
    settings.TRAINING_CACHE_DIR = tmp_path / "cache"
    return {"runs": tmp_path / "runs", "cache": tmp_path / "cache"}


@pytest.fixture
def tiny_base(db):
    from training.services.checkpoints import ensure_tiny_base_checkpoint

    return ensure_tiny_base_checkpoint()


def png(colour: tuple[int, ...], size: int = 32, mode: str = "RGB") -> bytes:
    image = PILImage.new(mode, (size, size), colour)
    for x in range(size // 4, size // 2):  # a shape, so images differ in more than colour
        for y in range(size // 4, 3 * size // 4):
            image.putpixel((x, y), tuple(255 - c for c in colour[:3]) + colour[3:])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def stored_image(colour: tuple[int, ...], caption: str) -> Image:
    import hashlib

    data = png(colour)
    sha = hashlib.sha256(data).hexdigest()
    source, _ = Source.objects.get_or_create(name="test-pool")
    image, _ = Image.objects.get_or_create(
        sha256=sha,
        defaults={
            "storage_key": store_bytes(data, "png", sha256=sha),
            "width": 32,
            "height": 32,
            "format": "PNG",
            "source": source,
            "caption": caption,
        },
    )
    return image


def make_version(
    kind: str, count: int = 4, *, freeze: bool = True, offset: int = 0, user: Any = None
):
    dataset, _ = Dataset.objects.get_or_create(name=f"test-{kind}", defaults={"kind": kind})
    version = create_draft_version(dataset, reason="test")
    rows = []
    for i in range(count):
        colour = ((37 * (i + offset) + 11 * len(kind)) % 256, (91 * i + 50) % 256, (53 * i) % 256)
        rows.append(
            {"image": stored_image(colour, f"a {kind} sticker {i}"), "caption": f"a {kind} {i}"}
        )
    add_items(version, rows)
    if freeze:
        version = freeze_version(version, user=user, reason="test")
    return version


@pytest.fixture
def versions(db) -> dict[str, DatasetVersion]:
    return {kind: make_version(kind) for kind in ("domain", "alignment", "style")}


@pytest.fixture
def prompt_set(db) -> PromptSet:
    prompts = PromptSet.objects.create(name="test prompts")
    for text in ("a cat", "a red house"):
        Prompt.objects.create(prompt_set=prompts, text=text)
    return prompts
