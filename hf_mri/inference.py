"""Batch inference on image files: load a saved or published model, score files, report bad ones per file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModelForImageClassification

from .image_processing_mri_vgg import MriImageError

__all__ = ["load_model", "predict_files"]

logger = logging.getLogger(__name__)


def load_model(model: str | os.PathLike, revision: str | None = None) -> tuple[torch.nn.Module, Any]:
    """Load model and image processor from a local folder or a Hub id, in eval mode."""
    kwargs = {"trust_remote_code": True, "revision": revision}
    try:
        loaded = AutoModelForImageClassification.from_pretrained(model, **kwargs).eval()
        loaded = loaded.to(memory_format=torch.channels_last)  # faster CPU convolutions, same results
        processor = AutoImageProcessor.from_pretrained(model, **kwargs)
    except OSError as err:
        raise OSError(
            f"could not load a model from {str(model)!r}: {err}. Pass a folder written by scripts/train.py or a Hub id "
            "(online, or already in the Hugging Face cache)."
        ) from err
    return loaded, processor


class _FileDataset(Dataset):
    """Preprocess one file per item; a bad file becomes an error message instead of an exception."""

    def __init__(self, paths: Sequence[str], processor: Any) -> None:
        self.paths, self.processor = list(paths), processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            pixels = self.processor([self.paths[index]], return_tensors="pt")["pixel_values"][0]
            return index, pixels, None
        except MriImageError as err:
            return index, None, str(err)
        except Exception as err:  # noqa: BLE001 - one odd file must not stop a batch of thousands
            return index, None, f"{self.paths[index]}: {type(err).__name__}: {err}"


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(index, pixels) for index, pixels, error in items if error is None]
    errors = [(index, error) for index, _, error in items if error is not None]
    pixels = torch.stack([pixels for _, pixels in good]) if good else None
    return [index for index, _ in good], pixels, errors


def predict_files(
    model: torch.nn.Module,
    processor: Any,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield, in input order, `{"path", "p_tumor", "label"}` per file, or `{"path", "error"}` for a bad one."""
    paths = [str(path) for path in paths]
    threshold = float(getattr(model.config, "threshold", 0.5))
    id2label = getattr(model.config, "id2label", {0: "no_tumor", 1: "tumor"})
    loader = DataLoader(
        _FileDataset(paths, processor), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    results: dict[int, dict[str, Any]] = {}
    next_index = 0
    device = next(model.parameters()).device
    for indices, pixels, errors in tqdm(loader, desc="predicting", unit="batch", disable=not progress):
        for index, error in errors:
            results[index] = {"path": paths[index], "error": error}
        if pixels is not None:
            with torch.inference_mode():
                logits = model(pixels.to(device)).logits.float().reshape(-1)
            probabilities = torch.sigmoid(logits).cpu().numpy()
            for index, probability in zip(indices, probabilities):
                label = id2label[int(probability >= threshold)]
                results[index] = {"path": paths[index], "p_tumor": round(float(probability), 6), "label": label}
        while next_index in results:
            yield results.pop(next_index)
            next_index += 1
