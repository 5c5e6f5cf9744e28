"""MriVggConfig: defaults, validation messages and JSON round trip."""

import pytest

from hf_mri import VGG16_LAYERS, MriVggConfig


def test_defaults_are_vgg16_with_binary_labels():
    config = MriVggConfig()
    assert config.vgg_layers == VGG16_LAYERS
    assert config.num_blocks == 5
    assert config.id2label == {0: "no_tumor", 1: "tumor"}
    assert set(config.auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("freeze_blocks", 7, "freeze_blocks must be in [0, 5], got 7"),
        ("image_size", 16, "image_size must be an integer >= 32, got 16"),
        ("head", "mlp", "head must be one of ('vgg', 'compact'), got 'mlp'"),
        ("dropout", 1.5, "dropout must be in [0, 1), got 1.5"),
        ("threshold", 1.0, "threshold must be in (0, 1), got 1.0"),
        ("pos_weight", -1.0, "pos_weight must be > 0 or None, got -1.0"),
        ("vgg_layers", [8, 16], "vgg_layers must"),
    ],
)
def test_validation_names_field_value_and_range(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        MriVggConfig(**{field: value})


def test_round_trip(tmp_path, tiny_config):
    tiny_config.threshold = 0.3
    tiny_config.save_pretrained(tmp_path)
    loaded = MriVggConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == tiny_config.to_dict()
