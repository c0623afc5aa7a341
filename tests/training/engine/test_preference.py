"""Preference scorers from weights on disk: both CLIP-shaped kinds score, bad entries say why."""

from __future__ import annotations

import pytest
from PIL import Image

from training.engine.preference import PreferenceModelError, load_preference_scorer


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]


@pytest.fixture(scope="module")
def hf_clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from training.engine.tiny import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("pickscore-shaped")
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def test_hf_clip_and_open_clip_kinds_score_with_their_checksums(hf_clip_folder, tmp_path):
    from safetensors.torch import save_file

    from training.engine.metrics import load_metric_clip

    pick = load_preference_scorer(
        {"name": "pickscore", "kind": "hf_clip", "weights": str(hf_clip_folder)}
    )
    scores = pick.score(_images(), ["a red square", "a blue square"])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    assert pick.describe()["sha256"] and pick.describe()["kind"] == "hf_clip"

    weights = tmp_path / "hps.safetensors"
    bundle = load_metric_clip("tiny-clip", None, seed=3)
    save_file(
        {k: v.contiguous().clone() for k, v in bundle.model.state_dict().items()}, str(weights)
    )
    hps = load_preference_scorer(
        {"name": "hpsv2", "kind": "open_clip", "model": "tiny-clip", "weights": str(weights)}
    )
    again = load_preference_scorer(
        {"name": "hpsv2", "kind": "open_clip", "model": "tiny-clip", "weights": str(weights)}
    )
    assert hps.score(_images(), ["a", "b"]) == again.score(_images(), ["a", "b"])
    assert hps.sha256 == again.sha256 != pick.sha256


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "ir", "kind": "image_reward", "weights": "/x"}, "image-reward package"),
        ({"name": "x", "kind": "blip", "weights": "/x"}, "kind: 'blip'"),
        (
            {"name": "pick", "kind": "hf_clip", "weights": "/no/such/folder"},
            "weights: /no/such/folder",
        ),
        ({"kind": "hf_clip", "weights": "/x"}, "name: is required"),
    ],
)
def test_bad_entries_name_the_field(entry, message, tmp_path):
    with pytest.raises(PreferenceModelError, match=message):
        load_preference_scorer(entry)


def test_open_clip_kind_needs_an_architecture(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"0")
    with pytest.raises(PreferenceModelError, match="model: the open_clip architecture"):
        load_preference_scorer({"name": "hps", "kind": "open_clip", "weights": str(weights)})
