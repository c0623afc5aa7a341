"""RGBA dataset versions of synthetic shapes, plus the training-django fixtures (tiny base,
run folders in tmp, jobs executed by the test)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from curation.models import Dataset, DatasetVersion, Image, Source
from curation.services.storage import store_bytes
from curation.services.versions import add_items, create_draft_version, freeze_version
from tests.training.django.conftest import (  # noqa: F401  (fixtures)
    models_dir,
    prompt_set,
    tiny_base,
    training_dirs,
)


def _stored(picture, caption: str) -> Image:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    source, _ = Source.objects.get_or_create(name="test-rgba")
    image, _ = Image.objects.get_or_create(
        sha256=sha,
        defaults={
            "storage_key": store_bytes(data, "png", sha256=sha),
            "width": picture.width,
            "height": picture.height,
            "format": "PNG",
            "has_alpha": picture.mode == "RGBA",
            "source": source,
            "caption": caption,
        },
    )
    return image


def make_shapes_version(
    train: int, held_out: int, *, rgba: bool = True, freeze: bool = True, seed: int = 0
) -> DatasetVersion:
    """Coloured shapes on a transparent background (16 px); `held_out` rows get split "val"."""
    from training.engine.toydata import COLOURS, SHAPES, shape_image

    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    dataset, _ = Dataset.objects.get_or_create(
        name=f"stickers-{'rgba' if rgba else 'rgb'}", defaults={"kind": Dataset.Kind.DOMAIN}
    )
    version = create_draft_version(dataset, reason="test")
    rows = []
    for index in range(train + held_out):
        shape, colour = SHAPES[index % 3], colours[int(rng.integers(4))]
        picture = shape_image(shape, colour, 16, rng, rgba=rgba)
        # 16 px shapes repeat (3 shapes x 4 colours x 2 margins); a marked corner pixel (fully
        # transparent in RGBA, so invisible to training) keeps every row a distinct image.
        corner = (index % 256, index // 256, 7, 0) if rgba else (index % 256, 255, 255)
        picture.putpixel((0, 0), corner)
        rows.append(
            {
                "image": _stored(picture, f"a {colour} {shape}"),
                "caption": f"a {colour} {shape}",
                "split": "val" if index >= train else "train",
            }
        )
    add_items(version, rows)
    return freeze_version(version, reason="test") if freeze else version


@pytest.fixture
def rgba_version(db) -> DatasetVersion:
    return make_shapes_version(40, 10)
