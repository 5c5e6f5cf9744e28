"""Grad-CAM: shape, range, sensitivity to the input, no side effects on the model, frozen blocks, overlay."""

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor
from hf_mri.explain import explain, save_overlays

CASES = [  # (batch_norm, head, freeze_blocks)
    (False, "vgg", 0),
    (False, "compact", 3),
    (True, "vgg", 3),
    (True, "compact", 1),
]


def _model(batch_norm=False, head="vgg", freeze_blocks=0, seed=0):
    torch.manual_seed(seed)
    config = MriVggConfig(**TINY, batch_norm=batch_norm, head=head, freeze_blocks=freeze_blocks)
    return MriVggForImageClassification(config)


def _brain(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    head = ((xx - size / 2) / (size * 0.4)) ** 2 + ((yy - size / 2) / (size * 0.45)) ** 2 < 1
    image = head * rng.integers(40, 140, (size, size))
    bx, by = rng.uniform(size * 0.3, size * 0.7, 2)
    return np.where((xx - bx) ** 2 + (yy - by) ** 2 < (size * 0.1) ** 2, 250, image).astype(np.uint8)


@pytest.mark.parametrize("batch_norm, head, freeze_blocks", CASES)
@pytest.mark.parametrize("training", [False, True])
def test_grad_cam_shape_range_and_no_side_effects(batch_norm, head, freeze_blocks, training):
    model = _model(batch_norm, head, freeze_blocks).train(training)
    requires_grad = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.randn(2, 3, 64, 64)

    heatmaps, logits = model.grad_cam(pixels)

    assert heatmaps.shape == (2, 64, 64) and logits.shape == (2, 1)
    assert torch.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert not heatmaps.requires_grad and not logits.requires_grad
    assert model.training == training
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():  # batch-norm running stats untouched (ran in eval mode)
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(pixels).logits)


def test_grad_cam_follows_the_input_and_the_target():
    model = _model()
    first, second = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    heat_first, _ = model.grad_cam(first)
    heat_second, _ = model.grad_cam(second)
    assert not torch.allclose(heat_first, heat_second)
    torch.testing.assert_close(model.grad_cam(first)[0], heat_first)  # deterministic
    heat_negative, _ = model.grad_cam(first, target=0)
    assert not torch.allclose(heat_first, heat_negative)
    assert heat_first.amax() == pytest.approx(1.0) or heat_first.amax() == 0


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_grad_cam_with_every_block_frozen_inside_no_grad(context):
    model = _model(freeze_blocks=3).eval()
    expected, _ = model.grad_cam(pixels := torch.randn(1, 3, 64, 64))
    with context():  # callers often wrap inference in no_grad / inference_mode; Grad-CAM must still work
        heatmaps, _ = model.grad_cam(pixels.clone())
    torch.testing.assert_close(heatmaps, expected)


def test_overlay_is_rgb_uint8_and_plain_gray_where_the_map_is_cold():
    processor = MriVggImageProcessor(image_size=64)
    gray = _brain(0, 64)
    cold = processor.overlay_heatmap(gray, np.zeros((64, 64), np.float32))
    assert cold.dtype == np.uint8 and cold.shape == (64, 64, 3)
    np.testing.assert_array_equal(cold, np.repeat(gray[..., None], 3, axis=2))
    hot = processor.overlay_heatmap(gray, torch.ones(8, 8))  # tensors and other sizes are resized
    assert hot.shape == (64, 64, 3) and not np.array_equal(hot, cold)


def test_explain_wrapper_matches_the_model(tmp_path):
    model, processor = _model().eval(), MriVggImageProcessor(image_size=64)
    path = tmp_path / "scan.png"
    Image.fromarray(_brain(1)).save(path)

    probability, heatmap, overlay = explain(model, processor, path)

    with torch.no_grad():
        expected = torch.sigmoid(model(**processor(path, return_tensors="pt")).logits)[0, 0].item()
    assert probability == pytest.approx(expected, abs=1e-6)
    assert heatmap.shape == (64, 64) and heatmap.dtype == np.float32 and 0 <= heatmap.min() <= heatmap.max() <= 1
    assert overlay.mode == "RGB" and overlay.size == (64, 64)


def test_save_overlays_skips_unreadable_files(tmp_path):
    model, processor = _model().eval(), MriVggImageProcessor(image_size=64)
    good = tmp_path / "good.png"
    Image.fromarray(_brain(2)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    written = save_overlays(model, processor, [good, bad], tmp_path / "cams")
    assert [p.name for p in written] == ["good_gradcam.png"]
    assert Image.open(written[0]).size == (64, 64)
