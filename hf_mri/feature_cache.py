"""Cached conv features for a fully frozen VGG base: compute them once, then train only the head on them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from datasets import Array3D, Dataset, DatasetDict, Features, Value
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.modeling_outputs import ImageClassifierOutput

from .augment import with_transforms

__all__ = ["CachedFeatureModel", "check_fully_frozen", "extract_features", "prepare_cached_features"]

logger = logging.getLogger(__name__)


def check_fully_frozen(model: nn.Module) -> None:
    """Raise a ValueError unless every conv block of `model` is frozen (cached features would go stale)."""
    frozen, blocks = int(model.config.freeze_blocks), int(model.config.num_blocks)
    trainable = [name for name, param in model.features.named_parameters() if param.requires_grad]
    if frozen != blocks or trainable:
        raise ValueError(
            f"cached features need the whole conv base frozen, but freeze_blocks is {frozen} of {blocks} blocks "
            f"(trainable conv parameters: {trainable[:4]}). Pass --freeze_blocks {blocks} with --cache_features, "
            "or drop --cache_features to fine-tune the conv blocks."
        )


class CachedFeatureModel(nn.Module):
    """The head of an `MriVggForImageClassification`, fed with cached conv features instead of pixels.

    It holds the full model's `avgpool` and `classifier` modules themselves (not copies), so training this wrapper
    with `Trainer` trains the full model's head, and `model.save_pretrained(...)` afterwards saves it. Its state
    dict (what Trainer checkpoints) holds only the head. `forward(features, labels=None)` returns an
    `ImageClassifierOutput` with `logits` (B, 1) and, given float `labels`, the model's own BCE loss.
    """

    main_input_name = "features"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.avgpool = model.avgpool
        self.classifier = model.classifier
        self.config = model.config
        object.__setattr__(self, "_full_model", model)  # a plain reference: not a submodule, not in state_dict

    @property
    def full_model(self) -> nn.Module:
        """The `MriVggForImageClassification` whose head this wrapper trains."""
        return self._full_model

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any
    ) -> ImageClassifierOutput:
        """Logits (B, 1) from conv features (B, C, h, w); with `labels`, also the loss."""
        logits = self.full_model.forward_head(features)
        loss = self.full_model.loss_from_logits(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def extract_features(
    model: nn.Module, dataset: Any, batch_size: int = 32, num_workers: int = 0, desc: str = "features"
) -> Dataset:
    """Run `model.forward_features` (eval mode, no autograd) over a dataset of `{"pixel_values", "labels"}` items.

    Returns an in-memory `datasets.Dataset` in torch format with `features` (float32 (C, h, w)) and `labels`
    (float32), in the input order.
    """
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=f"caching {desc}", unit="batch"):
                feats = model.forward_features(batch["pixel_values"].to(device))
                chunks.append(feats.float().cpu().contiguous().numpy())
                labels.append(torch.as_tensor(batch["labels"], dtype=torch.float32).reshape(-1).numpy())
    finally:
        model.train(was_training)
    if not chunks:  # an empty split (e.g. --val_fraction 0): an empty column of the right shape
        size, channels = int(model.config.image_size), int(model.config.num_channels)
        with torch.inference_mode():
            probe = model.forward_features(torch.zeros(1, channels, size, size, device=device))
        chunks, labels = [np.zeros((0, *probe.shape[1:]), np.float32)], [np.zeros(0, np.float32)]
    array = np.concatenate(chunks)
    features = Features({"features": Array3D(shape=array.shape[1:], dtype="float32"), "labels": Value("float32")})
    return Dataset.from_dict({"features": array, "labels": np.concatenate(labels)}, features=features).with_format(
        "torch"
    )


def prepare_cached_features(
    model: nn.Module,
    splits: DatasetDict,
    processor: Any,
    batch_size: int = 32,
    num_workers: int = 0,
) -> tuple[CachedFeatureModel, DatasetDict]:
    """Everything `train()` needs to train the head on cached features of a fully frozen conv base.

    Args:
        model (`MriVggForImageClassification`): with `freeze_blocks == config.num_blocks`; features are computed on
            the device it is on.
        splits (`DatasetDict`): the raw splits of `load_splits` (`path`, `label` columns).
        processor: the image processor; the un-augmented images of every split go through it once.
        batch_size / num_workers: of the one-off feature pass.

    Returns:
        `(wrapper, datasets)`: a `CachedFeatureModel` to hand to `Trainer` (it shares the head with `model`), and the
        cached splits with `features` and `labels` columns (use `remove_unused_columns=False`; the default collator
        stacks them).

    Raises:
        ValueError: when the conv base is not fully frozen.
    """
    check_fully_frozen(model)
    logger.warning(
        "--cache_features: conv features are computed once from the UN-augmented images, so training-time "
        "augmentation is OFF for this run (the head sees the same features every epoch)."
    )
    plain = with_transforms(splits, processor, None)
    cached = DatasetDict(
        {name: extract_features(model, part, batch_size, num_workers, desc=name) for name, part in plain.items()}
    )
    logger.info(
        "Cached features of shape %s for %s images",
        cached["train"].features["features"].shape,
        ", ".join(f"{len(part)} {name}" for name, part in cached.items()),
    )
    return CachedFeatureModel(model), cached
