import pytest
import torch

from training.engine.config import TrainConfig
from training.engine.recipes import build_recipe
from training.engine.timesteps import alignment_count, sample_timesteps


def test_sample_timesteps_stays_in_window():
    generator = torch.Generator().manual_seed(0)
    drawn = sample_timesteps(20_000, 250, 260, generator)
    assert drawn.dtype == torch.long
    assert int(drawn.min()) == 250 and int(drawn.max()) == 259
    assert len(torch.unique(drawn)) == 10
    with pytest.raises(ValueError):
        sample_timesteps(1, 5, 5)


@pytest.mark.parametrize(("batch", "ratio"), [(4, 0.5), (4, 0.3), (5, 0.25), (3, 0.9)])
def test_alignment_count_honours_ratio_exactly_over_a_run(batch, ratio):
    counts = [alignment_count(m, batch, ratio) for m in range(400)]
    for prefix in (7, 50, 400):
        total = sum(counts[:prefix])
        assert abs(total - prefix * batch * ratio) < 1
    assert all(abs(c - batch * ratio) < 1 for c in counts)


def test_sequential_phases_follow_order_and_split(make_config):
    config = TrainConfig.from_dict(
        make_config(recipe="sequential", sequential_order=["style", "alignment"], steps=5)
    )
    recipe = build_recipe(config, 1000)
    assert [recipe.plan(step, step)[0].role for step in range(5)] == ["style"] * 3 + [
        "alignment"
    ] * 2
    config = TrainConfig.from_dict(make_config(recipe="sequential", steps=5, phase_steps=[1, 4]))
    assert [build_recipe(config, 1000).plan(s, s)[0].role for s in range(5)] == ["alignment"] + [
        "style"
    ] * 4


def test_style_tailoring_batches_draw_each_set_from_its_window(make_config):
    from training.engine.loop import Trainer

    config = TrainConfig.from_dict(
        make_config(
            recipe="style_tailoring",
            t_s=300,
            mix_ratio=0.3,
            batch_size=5,
            loss_weights={"alignment": 2.0, "style": 0.5},
        )
    )
    trainer = Trainer(config, device="cpu")
    style_captions = {row.image_sha256 for row in trainer.datasets["style"].rows}
    roles, steps = [], []
    for micro in range(20):
        batch = trainer.draw_batch(step=micro, micro_step=micro)
        assert batch.timesteps.shape == (5,) and batch.latents.shape == (5, 4, 16, 16)
        for role, t, weight, sha in zip(
            batch.roles,
            batch.timesteps.tolist(),
            batch.weights.tolist(),
            batch.image_sha256,
            strict=True,
        ):
            if role == "style":
                assert 0 <= t < 300 and weight == 0.5 and sha in style_captions
            else:
                assert 300 <= t < 1000 and weight == 2.0 and sha not in style_captions
        roles += batch.roles
        steps += batch.timesteps.tolist()
    assert roles.count("alignment") == 30  # exactly 0.3 of 100 samples
    style_steps = [t for r, t in zip(roles, steps, strict=True) if r == "style"]
    assert (
        max(style_steps) > 200
        and min(t for r, t in zip(roles, steps, strict=True) if r == "alignment") < 500
    )
