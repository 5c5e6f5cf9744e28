"""Raw-image perturbations mimicking other scanners/sources, batched scoring of them, and a Grad-CAM cue check."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .image_processing_mri_vgg import MIN_SIDE, ImageLike, to_grayscale_uint8

__all__ = [
    "PERTURBATIONS",
    "adjust_contrast",
    "adjust_gamma",
    "cam_inside_head",
    "crop_margins",
    "equalize_histogram",
    "head_mask",
    "hflip",
    "invert",
    "jpeg_reencode",
    "pad_frame",
    "rescale",
    "rgb_gray",
    "score_images",
]

logger = logging.getLogger(__name__)

Perturbation = Callable[[ImageLike], Image.Image]


def _pil(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), mode="L")


def adjust_gamma(image: ImageLike, gamma: float) -> Image.Image:
    """Power-law intensity curve ``255 * (x / 255) ** gamma``: < 1 brightens mid-tones, > 1 darkens them."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    table = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    return _pil(table[to_grayscale_uint8(image)])


def invert(image: ImageLike) -> Image.Image:
    """Intensity inversion ``255 - x`` (dark background becomes white: a different contrast convention)."""
    return _pil(255 - to_grayscale_uint8(image))


def equalize_histogram(image: ImageLike) -> Image.Image:
    """Global histogram equalisation (OpenCV), as some PACS exports or preprocessing pipelines apply."""
    return _pil(cv2.equalizeHist(to_grayscale_uint8(image)))


def adjust_contrast(image: ImageLike, factor: float) -> Image.Image:
    """Scale contrast around the image mean: ``mean + factor * (x - mean)`` (factor < 1 flattens)."""
    gray = to_grayscale_uint8(image).astype(np.float32)
    mean = float(gray.mean())
    return _pil(np.clip(np.round(mean + factor * (gray - mean)), 0, 255))


def rescale(image: ImageLike, scale: float) -> Image.Image:
    """Resize by ``scale`` (bicubic; area when shrinking), keeping each side >= the processor's minimum."""
    pil = _pil(to_grayscale_uint8(image))
    width, height = pil.size
    size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
    return pil.resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC)


def pad_frame(image: ImageLike, fill: float = 0.6, position: tuple[float, float] = (0.2, 0.75)) -> Image.Image:
    """Place the image on a black canvas whose sides are ``1 / fill`` times larger, off-centre: ``position`` is
    the (x, y) fraction of the free space left of / above the image (0.5, 0.5 would centre it)."""
    if not 0 < fill <= 1:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    gray = to_grayscale_uint8(image)
    height, width = gray.shape
    canvas_h, canvas_w = round(height / fill), round(width / fill)
    top, left = round((canvas_h - height) * position[1]), round((canvas_w - width) * position[0])
    canvas = np.zeros((canvas_h, canvas_w), dtype=np.uint8)
    canvas[top : top + height, left : left + width] = gray
    return _pil(canvas)


def crop_margins(image: ImageLike, margin: float = 0.1) -> Image.Image:
    """Cut ``margin`` of the height/width off every side (tighter framing; may clip the skull)."""
    gray = to_grayscale_uint8(image)
    height, width = gray.shape
    dy, dx = round(height * margin), round(width * margin)
    dy, dx = min(dy, (height - MIN_SIDE) // 2), min(dx, (width - MIN_SIDE) // 2)
    return _pil(gray[max(dy, 0) : height - max(dy, 0), max(dx, 0) : width - max(dx, 0)])


def rgb_gray(image: ImageLike) -> Image.Image:
    """The same grey values stored as a 3-channel RGB image (R = G = B), as many JPEG exports do."""
    return _pil(to_grayscale_uint8(image)).convert("RGB")


def jpeg_reencode(image: ImageLike, quality: int = 30) -> Image.Image:
    """Round-trip through a lossy JPEG at ``quality`` (blocking and ringing artefacts)."""
    buffer = io.BytesIO()
    _pil(to_grayscale_uint8(image)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("L")


def hflip(image: ImageLike) -> Image.Image:
    """Left-right mirror (also the test-time augmentation)."""
    return ImageOps.mirror(_pil(to_grayscale_uint8(image)))


PERTURBATIONS: dict[str, Perturbation] = {
    "gamma_0.6": partial(adjust_gamma, gamma=0.6),
    "gamma_1.6": partial(adjust_gamma, gamma=1.6),
    "invert": invert,
    "hist_equalize": equalize_histogram,
    "contrast_0.6x": partial(adjust_contrast, factor=0.6),
    "resize_0.5x": partial(rescale, scale=0.5),
    "resize_2x": partial(rescale, scale=2.0),
    "pad_frame_60%": pad_frame,
    "crop_10%": crop_margins,
    "rgb_gray": rgb_gray,
    "jpeg_q30": jpeg_reencode,
    "hflip": hflip,
}
"""Name -> pure function (PIL image or array -> new PIL image), applied to the raw image before the processor."""


def score_images(
    model: Any,
    processor: Any,
    images: Sequence[ImageLike],
    transform: Callable | None = None,
    batch_size: int = 32,
    desc: str = "clean",
    bar: tqdm | None = None,
    clean: tuple[list[bytes], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[bytes]]:
    """P(tumour) for every image after ``transform`` and the processor (NaN where either fails), and a digest of
    each model input; where it equals the ``clean`` digest of the same image the clean P is reused, not recomputed."""
    param = next(model.parameters())
    probs, keys = np.full(len(images), np.nan), [b""] * len(images)
    if bar is not None:
        bar.set_postfix_str(desc)
    for start in range(0, len(images), batch_size):
        pixels, index = [], []
        for i in range(start, min(start + batch_size, len(images))):
            try:
                image = transform(images[i]) if transform else images[i]
                values = processor(image, return_tensors="np")["pixel_values"][0]
            except Exception as err:  # noqa: BLE001
                logger.warning("%s: image %d failed: %s", desc, i, err)
                continue
            keys[i] = hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).digest()
            if clean is not None and keys[i] == clean[0][i]:
                probs[i] = clean[1][i]
            else:
                pixels.append(values)
                index.append(i)
        if pixels:
            batch = torch.from_numpy(np.stack(pixels)).to(device=param.device, dtype=param.dtype)
            with torch.inference_mode():
                logits = model(batch).logits.float().reshape(-1)
            probs[index] = torch.sigmoid(logits).cpu().numpy()
        if bar is not None:
            bar.update()
    return probs, keys


def head_mask(gray: np.ndarray, level: int = 10) -> np.ndarray:
    """Boolean mask of the head in a preprocessed uint8 slice: blurred intensity > ``level``, holes filled."""
    foreground = (cv2.GaussianBlur(gray, (5, 5), 0) > level).astype(np.uint8)
    contours, _ = cv2.findContours(foreground, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(foreground)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def cam_inside_head(
    model: Any, processor: Any, images: Sequence[ImageLike], targets: Sequence[int], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the share of its Grad-CAM energy (for class ``targets[i]``) inside `head_mask` of the processed
    slice (NaN when the CAM is all zero), and the mask's share of the image (what a uniform CAM would score)."""
    param = next(model.parameters())
    targets = np.asarray(targets, dtype=int)
    inside, area = np.full(len(images), np.nan), np.zeros(len(images))
    for start in tqdm(range(0, len(images), batch_size), desc="grad-cam", unit="batch", leave=False):
        chunk = np.arange(start, min(start + batch_size, len(images)))
        grays = [processor.prepare_grayscale(images[i]) for i in chunk]
        pixels = torch.from_numpy(np.stack([processor.normalize_grayscale(g) for g in grays]))
        pixels = pixels.to(device=param.device, dtype=param.dtype)
        cams = np.zeros((len(grays), *grays[0].shape), dtype=np.float32)
        for target in np.unique(targets[chunk]):
            sel = np.flatnonzero(targets[chunk] == target)
            cams[sel] = model.grad_cam(pixels[sel], target=int(target))[0].float().cpu().numpy()
        for k, i in enumerate(chunk):
            mask, energy = head_mask(grays[k]), float(cams[k].sum())
            area[i] = mask.mean()
            if energy > 0:
                inside[i] = float(cams[k][mask].sum()) / energy
    return inside, area
