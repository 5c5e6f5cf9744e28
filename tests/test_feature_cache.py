"""Cached conv features: same logits as the frozen model, head-only gradients, Trainer trains the real head."""

import pytest
import torch
from conftest import TINY

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor
from hf_mri.data import load_splits
from hf_mri.feature_cache import CachedFeatureModel, check_fully_frozen, extract_features, prepare_cached_features


def frozen_model(**extra) -> MriVggForImageClassification:
    torch.manual_seed(0)
    config = MriVggConfig(**{**TINY, "freeze_blocks": 3, **extra})
    return MriVggForImageClassification(config)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    from conftest import make_mri_folder

    root = make_mri_folder(tmp_path_factory.mktemp("mri"), n_per_class=10)
    splits, _ = load_splits(root, seed=0, dedupe=False)
    model = frozen_model()
    processor = MriVggImageProcessor(image_size=TINY["image_size"])
    wrapper, datasets = prepare_cached_features(model, splits, processor, batch_size=4)
    return model, processor, splits, wrapper, datasets


def test_cached_splits_have_features_and_labels_in_order(cached):
    model, _, splits, _, datasets = cached
    assert set(datasets) == {"train", "validation", "test"}
    for name, part in datasets.items():
        assert len(part) == len(splits[name]) and set(part.column_names) == {"features", "labels"}
        item = part[0]
        assert item["features"].dtype == torch.float32 and item["features"].shape == (16, 8, 8)
        assert part[:]["labels"].tolist() == [float(label) for label in splits[name]["label"]]


@pytest.mark.parametrize("head", ["vgg", "compact"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_same_logits_as_the_uncached_frozen_model(head, batch_norm):
    model = frozen_model(head=head, batch_norm=batch_norm).eval()
    pixels = torch.randn(5, 3, 64, 64)
    dataset = [{"pixel_values": p, "labels": torch.tensor(1.0)} for p in pixels]
    features = extract_features(model, dataset, batch_size=2)
    wrapper = CachedFeatureModel(model).eval()
    with torch.no_grad():
        expected = model(pixels).logits
        got = wrapper(features[:]["features"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_gradient_reaches_only_the_head():
    model = frozen_model()
    wrapper = CachedFeatureModel(model).train()
    features = torch.randn(4, 16, 8, 8)
    out = wrapper(features, labels=torch.tensor([0.0, 1.0, 1.0, 0.0]))
    out.loss.backward()
    assert all(param.grad is None for param in model.features.parameters())
    assert all(param.grad is not None and param.grad.abs().sum() > 0 for param in model.classifier.parameters())
    head = {f"classifier.{name}" for name, _ in model.classifier.named_parameters()}
    assert {name for name, _ in wrapper.named_parameters()} == head


@pytest.mark.parametrize("frozen", [0, 2])
def test_refuses_a_partly_frozen_base(frozen):
    with pytest.raises(ValueError, match=rf"freeze_blocks is {frozen} of 3 blocks.*--freeze_blocks 3"):
        check_fully_frozen(frozen_model(freeze_blocks=frozen))


def test_trainer_on_the_wrapper_trains_and_saves_the_full_models_head(cached, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, processor, _, wrapper, datasets = cached
    head_before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    conv_before = {k: v.clone() for k, v in model.features.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
        use_cpu=True, report_to="none", remove_unused_columns=False, eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, load_best_model_at_end=True, logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=wrapper, args=args, train_dataset=datasets["train"], eval_dataset=datasets["validation"])
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(head_before[k], v) for k, v in model.classifier.state_dict().items())
    assert all(torch.equal(conv_before[k], v) for k, v in model.features.state_dict().items())
    model.eval()
    pixels = torch.stack([processor([path])["pixel_values"][0] for path in cached[2]["test"]["path"]])
    with torch.no_grad():
        expected = model(pixels).logits
    prediction = trainer.predict(datasets["test"])
    torch.testing.assert_close(torch.as_tensor(prediction.predictions), expected, atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path / "saved")
    reloaded = MriVggForImageClassification.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).logits, expected, atol=1e-6, rtol=0)
