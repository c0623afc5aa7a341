import torch

from training.engine.tiny import build_clip_tokenizer, build_tiny_components


def test_same_seed_same_weights_and_different_seed_differs():
    first, again, other = (build_tiny_components(s) for s in (0, 0, 1))
    for name in ("unet", "vae", "text_encoder"):
        a, b, c = (dict(m[name].state_dict()) for m in (first, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a)


def test_full_tokenizer_matches_open_clip_ids():
    import open_clip

    text = "A happy corgi, wearing sunglasses! 123"
    ours = build_clip_tokenizer(None)(text).input_ids
    theirs = open_clip.get_tokenizer("ViT-B-32")([text])[0].tolist()
    assert ours == theirs[: len(ours)]
    assert len(build_clip_tokenizer(None)) == 49408


def test_saved_base_model_round_trips(tiny_base):
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(tiny_base, local_files_only=True)
    built = build_tiny_components(0)
    assert pipeline.tokenizer.model_max_length == 77
    assert pipeline.text_encoder.config.vocab_size == len(pipeline.tokenizer)
    saved, fresh = pipeline.unet.state_dict(), built["unet"].state_dict()
    assert all(torch.equal(saved[k], fresh[k]) for k in fresh)
