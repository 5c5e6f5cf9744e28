"""Training augmentation: PIL in/out for every mode, seeded, switchable, and applied to the train split only."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hf_mri.augment import AugmentationConfig, MriAugmentation, build_augmentation, with_transforms  # noqa: E402
from hf_mri.data import SAMPLE_DATA_DIR, load_splits  # noqa: E402
from hf_mri.image_processing_mri_vgg import MriVggImageProcessor  # noqa: E402

ALWAYS = AugmentationConfig(hflip_prob=1.0, rotation_prob=1.0, affine_prob=1.0, jitter_prob=1.0)


def _image(mode: str, size: tuple[int, int] = (80, 64)) -> Image.Image:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size[::-1], dtype=np.uint8)
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)
    return Image.fromarray(gray).convert(mode)


@pytest.mark.parametrize(
    ("mode", "out_mode"), [("L", "L"), ("RGB", "RGB"), ("RGBA", "L"), ("P", "L"), ("I;16", "L"), ("F", "L")]
)
def test_output_is_pil_of_the_same_size(mode, out_mode):
    out = build_augmentation(ALWAYS)(_image(mode))
    assert isinstance(out, Image.Image) and out.mode == out_mode and out.size == (80, 64)


def test_deterministic_under_a_torch_seed_and_actually_random():
    augment = build_augmentation(ALWAYS)
    image = _image("L")
    torch.manual_seed(0)
    first = np.asarray(augment(image))
    torch.manual_seed(0)
    assert np.array_equal(first, np.asarray(augment(image)))
    assert not np.array_equal(first, np.asarray(augment(image)))
    assert not np.array_equal(first, np.asarray(image))


def test_off_flag_and_zero_probabilities():
    assert build_augmentation(AugmentationConfig(enabled=False)) is None
    assert isinstance(build_augmentation(), MriAugmentation)
    never = AugmentationConfig(hflip_prob=0.0, rotation_prob=0.0, affine_prob=0.0, jitter_prob=0.0)
    image = _image("L")
    assert np.array_equal(np.asarray(build_augmentation(never)(image)), np.asarray(image))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"hflip_prob": 1.5}, "hflip_prob"), ({"jitter_prob": -0.1}, "jitter_prob"),
     ({"rotation_degrees": 200}, "rotation_degrees"), ({"translate": 1.0}, "translate"),
     ({"scale_min": 1.2}, "scale_min"), ({"brightness": 1.0}, "brightness"), ({"contrast": -1}, "contrast")],
)  # fmt: skip
def test_config_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentationConfig(**kwargs)


def test_augmentation_reaches_the_train_split_only():
    splits, _ = load_splits(SAMPLE_DATA_DIR)
    ready = with_transforms(splits, MriVggImageProcessor(image_size=64), build_augmentation(ALWAYS))
    torch.manual_seed(0)
    for name in ("validation", "test"):
        assert torch.equal(ready[name][0]["pixel_values"], ready[name][0]["pixel_values"])
    first, second = ready["train"][0], ready["train"][0]
    assert not torch.equal(first["pixel_values"], second["pixel_values"])
    assert first["labels"] == second["labels"] and first["pixel_values"].shape == (3, 64, 64)
    plain = with_transforms(splits, MriVggImageProcessor(image_size=64), None)
    assert torch.equal(plain["train"][0]["pixel_values"], plain["train"][0]["pixel_values"])


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_presets_give_valid_varied_images(preset):
    torch.manual_seed(0)
    augment = build_augmentation(AugmentationConfig.preset(preset))
    image = _image("L")
    outputs = [np.asarray(augment(image)) for _ in range(4)]
    assert all(out.shape == np.asarray(image).shape and out.dtype == np.uint8 for out in outputs)
    assert len({out.tobytes() for out in outputs}) > 1


def test_gamma_changes_intensities_only():
    config = AugmentationConfig(hflip_prob=0, rotation_prob=0, affine_prob=0, jitter_prob=0, gamma_prob=1.0,
                                gamma_range=(2.0, 2.0))  # fmt: skip
    image = _image("L")
    out = np.asarray(build_augmentation(config)(image)).astype(int)
    original = np.asarray(image).astype(int)
    assert (out <= original).all() and (out < original).any()  # gamma 2 darkens every mid-tone


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="preset must be one of"):
        AugmentationConfig.preset("extreme")
