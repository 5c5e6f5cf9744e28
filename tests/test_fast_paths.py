"""CPU fast paths: channels_last and bf16 autocast train (by hand and through Trainer) and infer correctly."""

import copy

import pytest
import torch
from conftest import TINY

from hf_mri import MriVggConfig, MriVggForImageClassification

CL = torch.channels_last


def tiny_model(**extra) -> MriVggForImageClassification:
    torch.manual_seed(0)
    return MriVggForImageClassification(MriVggConfig(**{**TINY, "dropout": 0.0, **extra}))


def record_conv_dtypes(model: torch.nn.Module) -> list:
    """Dtype and memory format of every conv output, appended as the model runs."""
    seen = []

    def hook(module, inputs, output):
        seen.append((output.dtype, output.is_contiguous(memory_format=CL)))

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("batch_norm", [False, True])
def test_channels_last_keeps_the_logits_and_propagates_from_the_weights(batch_norm):
    model = tiny_model(batch_norm=batch_norm).eval()
    fast = copy.deepcopy(model).to(memory_format=CL)
    seen = record_conv_dtypes(fast)
    pixels = torch.randn(3, 3, 64, 64)  # contiguous input, as the data collator delivers it
    with torch.inference_mode():
        torch.testing.assert_close(fast(pixels).logits, model(pixels).logits, atol=1e-5, rtol=1e-5)
    assert seen and all(is_cl for _, is_cl in seen)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("freeze_blocks", [0, 2])
def test_bf16_autocast_channels_last_train_step(batch_norm, freeze_blocks):
    model = tiny_model(batch_norm=batch_norm, freeze_blocks=freeze_blocks).to(memory_format=CL).train()
    seen = record_conv_dtypes(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    pixels = torch.randn(4, 3, 64, 64).to(memory_format=CL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(pixels, labels=torch.tensor([0.0, 1.0, 1.0, 1.0])).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen)
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32 and torch.isfinite(param).all()
        changed = not torch.equal(param, before[name])
        assert changed == param.requires_grad, name
        if param.ndim == 4:
            assert param.is_contiguous(memory_format=CL), f"{name} lost channels_last"


def test_trainer_bf16_use_cpu_with_a_channels_last_model(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = tiny_model(batch_norm=True).to(memory_format=CL)
    seen = record_conv_dtypes(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    data = [
        {"pixel_values": torch.randn(3, 64, 64, generator=generator), "labels": torch.tensor(float(i % 3 != 0))}
        for i in range(8)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        bf16=True, use_cpu=True, report_to="none", remove_unused_columns=False, save_strategy="no",
        logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen), "Trainer did not autocast to bf16"
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.save_pretrained(tmp_path / "saved")
    reloaded = MriVggForImageClassification.from_pretrained(tmp_path / "saved").eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(pixels).logits, model.eval()(pixels).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["vgg", "compact"])
def test_inference_mode_channels_last_and_bf16_agree_with_fp32(head):
    model = tiny_model(head=head).eval()
    fast = copy.deepcopy(model).to(memory_format=CL)
    pixels = torch.randn(5, 3, 64, 64)
    with torch.inference_mode():
        reference = model(pixels).logits
        fp32 = fast(pixels).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = fast(pixels).logits
    torch.testing.assert_close(fp32, reference, atol=1e-5, rtol=1e-5)
    assert bf16.dtype == torch.bfloat16 and torch.isfinite(bf16).all()
    scale = reference.abs().max().clamp_min(1e-3)
    assert (bf16.float() - reference).abs().max() <= 0.05 * scale
