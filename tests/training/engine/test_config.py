import pytest

from training.engine.config import ConfigError, TrainConfig


def test_round_trips_through_json(make_config, tmp_path):
    config = TrainConfig.from_dict(make_config(recipe="style_tailoring", mix_ratio=0.25))
    config.to_json(tmp_path / "c.json")
    again = TrainConfig.from_json(tmp_path / "c.json")
    assert again == config
    assert again.datasets["style"].sha256 == config.datasets["style"].sha256


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"recipe": "nope"}, "recipe"),
        ({"recipe": "style_tailoring", "t_s": 0}, "t_s"),
        ({"recipe": "style_tailoring", "mix_ratio": 1.0}, "mix_ratio"),
        ({"recipe": "style_tailoring", "mix_ratio": 0}, "mix_ratio"),
        ({"batch_size": 0}, "batch_size"),
        ({"resolution": 30}, "resolution"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"bogus": 1}, "bogus"),
        ({"recipe": "sequential", "phase_steps": [1, 1]}, "phase_steps"),
        ({"loss_weights": {"style": -1}}, "loss_weights.style"),
    ],
)
def test_bad_values_name_their_field(make_config, overrides, field):
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_dict(make_config(**overrides))
    assert raised.value.field == field
    assert str(raised.value).startswith(field)


def test_recipe_requires_its_datasets(make_config, toy_datasets):
    data = make_config(recipe="style_tailoring", datasets={"style": toy_datasets["style"]})
    with pytest.raises(
        ConfigError, match="datasets.alignment: is required by the 'style_tailoring'"
    ):
        TrainConfig.from_dict(data)


def test_t_s_bounded_by_the_models_timesteps(make_config):
    config = TrainConfig.from_dict(make_config(recipe="style_tailoring", t_s=1000))
    with pytest.raises(ConfigError, match="t_s: must be < the base model's num_train_timesteps"):
        config.validate(num_train_timesteps=1000)


def test_bad_checksum_format_names_dataset(make_config, toy_datasets):
    datasets = {"domain": {**toy_datasets["domain"], "sha256": "abc"}}
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_dict(make_config(datasets=datasets))
    assert raised.value.field == "datasets.domain.sha256"
