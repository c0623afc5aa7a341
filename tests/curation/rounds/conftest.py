"""Rows for round tests: real stored PNGs, generation batches, annotators with accounts."""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group
from PIL import Image as PILImage

from curation.models import Image, Prompt, PromptSet
from curation.roles import ANNOTATOR
from curation.services.storage import store_bytes
from training.models import Checkpoint, Generation, GenerationBatch


def png_bytes(seed: int, size: int = 16) -> bytes:
    colour = tuple(hashlib.sha256(str(seed).encode()).digest()[:3])
    buffer = io.BytesIO()
    PILImage.new("RGBA", (size, size), (*colour, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image(seed: int, caption: str = "") -> Image:
    data = png_bytes(seed)
    sha = hashlib.sha256(data).hexdigest()
    image, _ = Image.objects.get_or_create(
        sha256=sha,
        defaults={
            "storage_key": store_bytes(data, "png", sha256=sha),
            "width": 16,
            "height": 16,
            "format": "PNG",
            "has_alpha": True,
            "caption": caption,
        },
    )
    return image


@pytest.fixture
def make_batch(db) -> Callable[..., GenerationBatch]:
    """make_batch(name, prompts, seeds, image_offset) -> a batch with one image per (prompt, seed)."""
    prompt_set = PromptSet.objects.create(name=f"prompts-{secrets.token_hex(3)}")
    prompts: dict[str, Prompt] = {}

    def build(
        name: str, texts: list[str], seeds: tuple[int, ...] = (1,), image_offset: int = 0
    ) -> GenerationBatch:
        checkpoint = Checkpoint.objects.create(name=f"{name}-{secrets.token_hex(3)}", path="/x")
        batch = GenerationBatch.objects.create(
            name=name, checkpoint=checkpoint, prompt_set=prompt_set, seeds=list(seeds)
        )
        n = 0
        for text in texts:
            prompt = prompts.get(text) or prompts.setdefault(
                text, Prompt.objects.create(prompt_set=prompt_set, text=text)
            )
            for seed in seeds:
                Generation.objects.create(
                    batch=batch,
                    prompt=prompt,
                    prompt_text=f"sticker of {text}",
                    seed=seed,
                    image=make_image(image_offset + n),
                )
                n += 1
        return batch

    return build


@pytest.fixture
def make_annotators(db, django_user_model) -> Callable[[int], list]:
    def build(count: int) -> list:
        tag = secrets.token_hex(3)
        group = Group.objects.get(name=ANNOTATOR)
        users = []
        for i in range(count):
            user = django_user_model.objects.create_user(
                username=f"rater{i}-{tag}",
                email=f"rater{i}-{tag}@example.com",
                password="unused-platform-password",
            )
            user.groups.add(group)
            users.append(user)
        return users

    return build
