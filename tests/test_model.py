"""MriVggForImageClassification: shapes, loss, freezing, and checked import of torchvision / timm VGG16 weights."""

import pickle

import pytest
import torch
from conftest import TINY

from hf_mri import MriVggConfig, MriVggForImageClassification, WeightsError


@pytest.mark.parametrize("head", ["vgg", "compact"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("image_size", [32, 64, 96])
def test_forward_shapes_and_loss(head, batch_norm, image_size):
    model = MriVggForImageClassification(
        MriVggConfig(**{**TINY, "image_size": image_size, "head": head, "batch_norm": batch_norm})
    )
    pixels = torch.randn(3, 3, image_size, image_size)
    out = model(pixels, labels=torch.tensor([0.0, 1.0, 1.0]))
    assert out.logits.shape == (3, 1)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[:, 0], torch.tensor([0.0, 1.0, 1.0]))
    assert torch.allclose(out.loss, expected)


def test_pos_weight_and_label_smoothing_change_the_loss():
    torch.manual_seed(0)
    pixels, labels = torch.randn(4, 3, 64, 64), torch.tensor([1.0, 1.0, 0.0, 1.0])
    losses = []
    for extra in ({}, {"pos_weight": 3.0}, {"label_smoothing": 0.1}):
        torch.manual_seed(0)
        model = MriVggForImageClassification(MriVggConfig(**TINY, dropout=0.0, **extra)).eval()
        losses.append(model(pixels, labels=labels).loss.item())
    assert len({round(value, 6) for value in losses}) == 3


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("frozen", [0, 1, 2, 3])
def test_freeze_blocks_stops_exactly_those_gradients(frozen, batch_norm):
    model = MriVggForImageClassification(MriVggConfig(**TINY, freeze_blocks=frozen, batch_norm=batch_norm))
    model.train()
    model(torch.randn(2, 3, 64, 64), labels=torch.tensor([0.0, 1.0])).loss.backward()
    for block in range(model.config.num_blocks):
        for param in model.block_modules(block).parameters():
            if block < frozen:
                assert param.grad is None and not param.requires_grad
            else:
                assert param.grad is not None and param.grad.abs().sum() > 0
        for module in model.block_modules(block).modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.training == (block >= frozen)
    assert all(param.grad is not None for param in model.classifier.parameters())


def test_freezing_survives_save_and_reload(tmp_path):
    model = MriVggForImageClassification(MriVggConfig(**TINY, freeze_blocks=2))
    model.save_pretrained(tmp_path)
    reloaded = MriVggForImageClassification.from_pretrained(tmp_path)
    assert [p.requires_grad for p in reloaded.parameters()] == [p.requires_grad for p in model.parameters()]


def _torchvision_vgg16(batch_norm: bool):
    import torchvision

    torch.manual_seed(0)
    return (torchvision.models.vgg16_bn() if batch_norm else torchvision.models.vgg16()).eval()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_torchvision_pth_import_matches_source(tmp_path, batch_norm):
    source = _torchvision_vgg16(batch_norm)
    path = tmp_path / "vgg16.pth"
    torch.save(source.state_dict(), path)
    model = MriVggForImageClassification.from_vgg16(path, batch_norm=batch_norm, head="vgg").eval()
    assert model.config.weights_source == "file:vgg16.pth"
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.forward_features(pixels)
        torch.testing.assert_close(ours, source.features(pixels), atol=1e-5, rtol=0)
        fc7 = source.classifier[:6](torch.flatten(source.avgpool(ours), 1))
        torch.testing.assert_close(model.forward_head(ours, pre_logits=True), fc7, atol=1e-5, rtol=0)


def test_timm_safetensors_import_matches_source(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("vgg16", pretrained=False).eval()
    path = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    model = MriVggForImageClassification.from_vgg16(path, head="vgg").eval()
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        theirs = source.forward_features(pixels)
        torch.testing.assert_close(model.forward_features(pixels), theirs, atol=1e-5, rtol=0)
        ours_fc7 = model.forward_head(theirs, pre_logits=True)
        theirs_fc7 = torch.flatten(source.forward_head(theirs, pre_logits=True), 1)
        torch.testing.assert_close(ours_fc7, theirs_fc7, atol=1e-5, rtol=1e-5)


def test_compact_head_takes_only_conv_weights():
    source = _torchvision_vgg16(False)
    model = MriVggForImageClassification.from_vgg16(source.state_dict(), head="compact")
    assert model.config.weights_source == "state_dict"
    torch.testing.assert_close(model.features[0].weight, source.features[0].weight)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda sd: sd.pop("features.0.weight"), "missing"),
        (lambda sd: sd.__setitem__("features.0.weight", torch.zeros(64, 3, 5, 5)), "shape mismatches"),
        (lambda sd: sd.__setitem__("features.99.weight", torch.zeros(1)), "unexpected"),
    ],
)
def test_every_key_and_shape_is_checked(mutate, message):
    state_dict = dict(_torchvision_vgg16(False).state_dict())
    mutate(state_dict)
    with pytest.raises(WeightsError, match=message):
        MriVggForImageClassification.from_vgg16(state_dict)


def test_bn_weights_into_plain_model_are_refused():
    with pytest.raises(WeightsError, match="vgg16 vs vgg16_bn"):
        MriVggForImageClassification.from_vgg16(_torchvision_vgg16(True).state_dict(), batch_norm=False)


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"features.0.weight": _Exploit()}))
    with pytest.raises(WeightsError, match="weights_only=True"):
        MriVggForImageClassification.from_vgg16(path)


def test_imagenet_offline_names_both_sources_and_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")
    import torchvision.models as tvm

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm.VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(WeightsError) as err:
        MriVggForImageClassification.from_vgg16("imagenet", **TINY)
    text = str(err.value)
    assert "timm/vgg16.tv_in1k" in text and "VGG16_Weights" in text and "weights=PATH" in text
