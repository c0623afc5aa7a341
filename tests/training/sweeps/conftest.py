"""The small toy world on the platform: its base, its CLIP as the evaluation CLIP, frozen
alignment and style versions of its own images, and a retrain round on them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.models import Dataset, DatasetVersion, Image, Prompt, PromptSet, Source
from curation.services.storage import store_bytes
from curation.services.versions import add_items, create_draft_version, freeze_version
from training.models import RetrainRound

# Two prompts of the sticker set and two outside it, two seeds: the smallest plane that has
# something to compare (4 prompts × 2 seeds per arm).
EVAL_PROMPTS = ["a red circle", "two blue squares", "a green triangle", "three yellow circles"]
SWEEP_SETTINGS = {
    "t_s_values": [300, 700],
    "mix_ratios": [0.5],
    "adapter": "full",
    "hyperparameters": {"steps": 2, "batch_size": 4, "checkpoint_every": 1},
}


@pytest.fixture(autouse=True)
def training_dirs(settings, tmp_path: Path) -> None:
    settings.TRAINING_MODELS_DIR = tmp_path / "models"
    settings.TRAINING_RUNS_DIR = tmp_path / "runs"
    settings.TRAINING_CACHE_DIR = tmp_path / "cache"


def toy_version(world: dict, role: str, kind: str, limit: int) -> DatasetVersion:
    """A frozen version of the first `limit` images of one of the toy world's datasets."""
    folder = Path(world["datasets"][role]["image_root"])
    rows = pq.read_table(world["datasets"][role]["manifest"]).to_pylist()[:limit]
    source, _ = Source.objects.get_or_create(name="toy-world-test")
    dataset, _ = Dataset.objects.get_or_create(name=f"toy-{role}", defaults={"kind": kind})
    version = create_draft_version(dataset, reason="test")
    items = []
    for row in rows:
        data = (folder / row["image_path"]).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        image, _ = Image.objects.get_or_create(
            sha256=sha,
            defaults={
                "storage_key": store_bytes(data, "png", sha256=sha),
                "width": 32,
                "height": 32,
                "format": "PNG",
                "source": source,
                "caption": row["caption"],
            },
        )
        items.append({"image": image, "caption": row["caption"]})
    add_items(version, items)
    return freeze_version(version, reason="test")


@pytest.fixture
def toy(db, settings, toy_world_small):
    from training.services.toy_world import ensure_toy_world

    world = ensure_toy_world(root=Path(toy_world_small["directory"]).parent)
    settings.EVAL_CLIP_MODEL = "tiny-clip"
    settings.EVAL_CLIP_WEIGHTS = world.clip_weights
    prompts = PromptSet.objects.create(name="toy eval", purpose="evaluation")
    for text in EVAL_PROMPTS:
        Prompt.objects.create(prompt_set=prompts, text=text, category=text.split()[-1])
    versions = [
        toy_version(world.info, "alignment", "alignment", 12),
        toy_version(world.info, "style", "style", 12),
    ]
    round_ = RetrainRound.objects.create(
        name="toy round",
        base_checkpoint=world.base,
        prompt_set=prompts,
        eval_prompt_set=prompts,
        seeds=[0, 1],
    )
    round_.dataset_versions.set(versions)
    return {"world": world, "round": round_, "versions": versions, "prompts": prompts}
