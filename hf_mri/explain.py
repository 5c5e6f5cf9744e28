"""Grad-CAM explanations: a thin wrapper over the model's `grad_cam` and the processor's `overlay_heatmap`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .image_processing_mri_vgg import ImageLike, MriImageError, MriVggImageProcessor
from .modeling_mri_vgg import MriVggForImageClassification

__all__ = ["explain", "save_overlays"]

logger = logging.getLogger(__name__)


def explain(
    model: MriVggForImageClassification,
    processor: MriVggImageProcessor,
    image: ImageLike,
    *,
    target: int = 1,
    alpha: float = 0.5,
) -> tuple[float, np.ndarray, Image.Image]:
    """Explain one image (path incl. DICOM, PIL image or array) with Grad-CAM.

    Returns `(probability, heatmap, overlay)`: P(tumour) from the same forward pass, the heat map as float32
    (S, S) in [0, 1] at the processor's `image_size` for class `target` (1 = tumour, 0 = no tumour), and an RGB
    PIL image of the heat map blended over the preprocessed grayscale slice.

    Raises:
        MriImageError: if the image cannot be read (the message names the file).
    """
    gray = processor.prepare_grayscale(image)
    pixel_values = torch.from_numpy(np.ascontiguousarray(processor.normalize_grayscale(gray)))[None]
    pixel_values = pixel_values.to(device=model.device, dtype=model.dtype)
    heatmaps, logits = model.grad_cam(pixel_values, target=target)
    probability = float(torch.sigmoid(logits.float())[0, 0])
    heatmap = heatmaps[0].float().cpu().numpy()
    overlay = Image.fromarray(processor.overlay_heatmap(gray, heatmap, alpha=alpha))
    return probability, heatmap, overlay


def save_overlays(
    model: MriVggForImageClassification,
    processor: MriVggImageProcessor,
    files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
) -> list[Path]:
    """Write `<out_dir>/<file stem>_gradcam.png` per readable file (unreadable ones are logged and skipped)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, file in enumerate(files):
        try:
            probability, _, overlay = explain(model, processor, file)
        except MriImageError as err:
            logger.warning("No Grad-CAM for %s: %s", file, err)
            continue
        target = out / f"{Path(file).stem}_gradcam.png"
        if target in written:  # same stem in two folders
            target = out / f"{Path(file).stem}_{index}_gradcam.png"
        overlay.save(target)
        written.append(target)
        logger.info("P(tumor)=%.3f, Grad-CAM overlay: %s", probability, target)
    return written
