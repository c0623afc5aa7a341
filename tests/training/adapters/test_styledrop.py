"""StyleDrop: the adapter, the style descriptor and feedback selection (the iterative recipe
itself: test_styledrop_iterative.py)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from training.engine import metrics
from training.engine.adapters import get_adapter, styledrop
from training.engine.config import ConfigError
from training.engine.style_prompts import with_style_descriptor
from training.engine.styledrop_feedback import Generation, select_by_feedback


def _image(
    colour: tuple[int, int, int], box: tuple[int, int, int, int] | None = None
) -> Image.Image:
    image = Image.new("RGB", (32, 32), colour)
    if box:
        image.paste((255 - colour[0], 255 - colour[1], 255 - colour[2]), box)
    return image


def test_adapter_trains_only_low_rank_attention_weights(
    unet, fresh_unet, unet_inputs, tmp_path
) -> None:
    trainable = styledrop.apply(unet, {"rank": 2})
    names = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert names and all(".styledrop." in n and ("attn1" in n or "attn2" in n) for n in names)
    assert {id(p) for p in trainable} == {id(p) for p in unet.parameters() if p.requires_grad}
    base = sum(p.numel() for n, p in unet.named_parameters() if ".styledrop." not in n)
    assert sum(p.numel() for p in trainable) < 0.05 * base  # tiny UNet; SD1.5 figure in param_count

    latents, t, context = unet_inputs
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    expected = unet(latents, t, context).sample
    get_adapter("styledrop").save(unet, tmp_path)
    restored = fresh_unet()
    styledrop.load(restored, tmp_path)
    assert torch.equal(restored(latents, t, context).sample, expected)


def test_unknown_param_names_the_field(unet) -> None:
    with pytest.raises(ConfigError) as error:
        styledrop.apply(unet, {"rnak": 4})
    assert error.value.field == "adapter_params.rnak"


def test_target_modules_matching_nothing_is_a_config_error(unet) -> None:
    with pytest.raises(ConfigError, match="matches no module") as error:
        styledrop.apply(unet, {"target_modules": r".*nothing"})
    assert error.value.field == "adapter_params.target_modules"


def test_style_descriptor_is_appended_once() -> None:
    prompt = with_style_descriptor("a fox", "in flat sticker style")
    assert prompt == "a fox, in flat sticker style"
    assert with_style_descriptor(prompt, "in flat sticker style") == prompt
    assert with_style_descriptor("a fox", "") == "a fox"


def _generations() -> list[Generation]:
    colours = [(250, 40, 40), (30, 200, 60), (20, 40, 230), (240, 240, 20), (120, 120, 120)]
    return [
        Generation(f"g{i}", prompt, _image(colour, (8, 8, 24, 24)), seed=i)
        for i, (colour, prompt) in enumerate(
            zip(colours, ["a fox", "a tree", "a cup", "a car", "a hat"], strict=True)
        )
    ]


def test_clip_feedback_ranks_by_text_times_style(clip_bundle) -> None:
    generations = _generations()
    references = [_image((250, 40, 40), (8, 8, 24, 24))]
    selection = select_by_feedback(
        generations, "clip", clip=clip_bundle, style_references=references, top_k=2
    )
    text = metrics.text_score(
        clip_bundle, [g.image for g in generations], [g.prompt for g in generations]
    )
    style = metrics.style_score(clip_bundle, [g.image for g in generations], references)
    expected = text.clamp(min=0) * style.clamp(min=0)
    by_id = {d.generation_id: d for d in selection.decisions}
    for index, generation in enumerate(generations):
        assert by_id[generation.id].score == pytest.approx(float(expected[index]), abs=1e-5)
    assert len(selection.selected) == 2
    kept = [by_id[g.id].score for g in selection.selected]
    assert kept == sorted(kept, reverse=True)
    assert min(kept) >= max(by_id[i].score for i in selection.rejected_ids)
    assert all(by_id[i].reason == "outside top_k" for i in selection.rejected_ids)

    cut = float(expected.max()) - 1e-6 if float(expected.max()) > 0 else 0.5
    thresholded = select_by_feedback(
        generations, "clip", clip=clip_bundle, style_references=references, threshold=cut
    )
    assert {g.id for g in thresholded.selected} == {
        g.id for g, score in zip(generations, expected.tolist(), strict=True) if score >= cut
    }
    assert all(d.reason == "below threshold" for d in thresholded.decisions if not d.selected)
    with pytest.raises(ValueError, match="threshold/top_k"):
        select_by_feedback(generations, "clip", clip=clip_bundle, style_references=references)


def test_clip_feedback_rejects_an_unreadable_image_without_failing(clip_bundle, tmp_path) -> None:
    generations = _generations()[:2] + [Generation("broken", "a fox", tmp_path / "missing.png")]
    selection = select_by_feedback(
        generations,
        "clip",
        clip=clip_bundle,
        style_references=[_image((250, 40, 40))],
        threshold=-1,
    )
    broken = next(d for d in selection.decisions if d.generation_id == "broken")
    assert not broken.selected and "missing.png" in broken.reason
    assert {g.id for g in selection.selected} == {"g0", "g1"}


def test_human_feedback_uses_the_callback_verdicts() -> None:
    generations = _generations()
    seen = []

    def annotators(batch):
        seen.extend(g.id for g in batch)
        return {"g0": True, "g1": False, "g3": True}

    selection = select_by_feedback(generations, "human", human_feedback=annotators)
    assert seen == [g.id for g in generations]
    assert [g.id for g in selection.selected] == ["g0", "g3"]
    reasons = {d.generation_id: d.reason for d in selection.decisions if not d.selected}
    assert reasons == {"g1": "failed review", "g2": "no judgement", "g4": "no judgement"}
    with pytest.raises(ValueError, match="unknown generation ids"):
        select_by_feedback(generations, "human", human_feedback=lambda batch: {"nope": True})
