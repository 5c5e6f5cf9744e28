"""MriVggImageProcessor: the one deterministic path from an MRI slice (any format) to model input."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

__all__ = ["MriImageError", "MriVggImageProcessor", "load_image", "to_grayscale_uint8"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 40_000_000  # ~6300x6300: far above any MRI slice, far below a decompression bomb
DICOM_SUFFIXES = {".dcm", ".dicom"}
DENOISE_CHOICES = ("median", "gaussian", "nlmeans", "none")
EQUALIZE_CHOICES = ("clahe", "global", "none")
RESIZE_CHOICES = ("pad", "stretch")

ImageLike = Any  # PIL.Image.Image | np.ndarray | str | os.PathLike


class MriImageError(ValueError):
    """An input image cannot be used; the message names the file and the problem."""


def _name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "filename", "") or f"<{type(source).__name__}>"


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _check_inflated_size(path: Path, limit: int) -> None:
    """pydicom inflates a deflated DICOM whole before parsing it: refuse one that inflates beyond `limit` bytes."""
    import zlib

    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        meta = read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - dcmread reports unreadable files
        return
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as handle:
        handle.seek(128 + 4 + 12 + int(meta.get("FileMetaInformationGroupLength", 0)))  # preamble, DICM, (0002,0000)
        while not inflater.eof and (data := inflater.unconsumed_tail or handle.read(1 << 16)):
            try:
                total += len(inflater.decompress(data, 1 << 20))
            except zlib.error as err:
                raise MriImageError(f"{path}: not a readable deflated DICOM file ({err})") from err
            if total > limit:
                raise MriImageError(
                    f"{path}: deflated DICOM inflates to more than {limit} bytes (possible decompression bomb)"
                )


def _load_dicom(path: Path, max_pixels: int) -> Image.Image:
    """Read one DICOM slice, apply its VOI LUT / window (else min-max) and return an 8-bit image."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as err:  # pragma: no cover - pydicom is a dependency of hf_mri
        raise MriImageError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from err
    _check_inflated_size(path, 4 * max_pixels)  # room for one 16-bit slice of max_pixels, twice
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:
        raise MriImageError(f"{path}: not a readable DICOM file ({err})") from err
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise MriImageError(f"{path}: DICOM slice of {cols}x{rows} pixels exceeds the limit of {max_pixels}")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            ds.pixel_array_options(index=frames // 2)  # multi-frame: decode the middle slice only
        pixels = ds.pixel_array
    except Exception as err:
        raise MriImageError(f"{path}: DICOM has no decodable pixel data ({err})") from err
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[pixels.shape[0] // 2]  # multi-frame: the middle slice
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) > 1:  # colour (e.g. RGB secondary capture): luminance
        pixels = np.asarray(pixels[..., :3], dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixels = apply_modality_lut(pixels, ds)
    windowed = "WindowCenter" in ds or "VOILUTSequence" in ds
    if windowed and pixels.ndim == 2:
        pixels = apply_voi_lut(pixels, ds)
    gray = _minmax_uint8(np.asarray(pixels, dtype=np.float32))
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray, mode="L")


def load_image(source: ImageLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a path (JPEG, PNG, BMP, TIFF, GIF first frame, DICOM) or pass through a PIL image, validated.

    Raises:
        MriImageError: naming the file, if it is missing, not an image, truncated, too small or too large.
    """
    if isinstance(source, Image.Image):
        _check_size(source.size, _name(source), max_pixels)
        return source
    if isinstance(source, np.ndarray):
        _check_size((source.shape[1], source.shape[0]) if source.ndim >= 2 else (0, 0), "<array>", max_pixels)
        return source
    path = Path(source)
    if not path.is_file():
        raise MriImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MriImageError(f"{path}: empty file (0 bytes)")
    if _is_dicom(path):
        image = _load_dicom(path, max_pixels)
        _check_size(image.size, str(path), max_pixels)
        return image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            _check_size(image.size, str(path), max_pixels)
            image.seek(0)  # animated GIF / multi-page TIFF: first frame
            image.load()
    except MriImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise MriImageError(f"{path}: refused as a possible decompression bomb ({err})") from err
    except UnidentifiedImageError as err:
        raise MriImageError(f"{path}: not an image format that can be read (is it text, SVG or HTML?)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise MriImageError(f"{path}: unreadable or truncated image ({err})") from err
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        pass
    image.filename = str(path)
    return image


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if min(width, height) < MIN_SIDE:
        raise MriImageError(f"{name}: image of {width}x{height} pixels is below the {MIN_SIDE}-pixel minimum side")
    if width * height > max_pixels:
        raise MriImageError(
            f"{name}: image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels "
            "(possible decompression bomb; raise max_pixels if it is genuine)"
        )


def _minmax_uint8(array: np.ndarray) -> np.ndarray:
    array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def to_grayscale_uint8(image: ImageLike) -> np.ndarray:
    """Any PIL mode (L, RGB, RGBA, P, I;16, I, F, CMYK, ...) or array (H,W[,C]) -> uint8 (H, W)."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            return _minmax_uint8(np.asarray(image))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, rgba)
        return np.asarray(image.convert("L"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first -> channels-last
    if array.ndim == 3:
        if array.shape[-1] == 1:
            array = array[..., 0]
        else:
            gray = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            if array.dtype == np.uint8:
                return np.clip(np.round(gray), 0, 255).astype(np.uint8)
            return _minmax_uint8(gray)
    if array.ndim != 2:
        raise MriImageError(f"<array>: expected a 2-D or 3-D image array, got shape {array.shape}")
    return array if array.dtype == np.uint8 else _minmax_uint8(array)


def crop_to_foreground(gray: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """Crop to the bounding box of the head (pixels above an Otsu threshold); unchanged if unsure."""
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    threshold, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = blurred > max(threshold * 0.5, 10)
    ys, xs = np.nonzero(mask)
    if len(xs) < 0.05 * gray.size:
        return gray
    height, width = gray.shape
    pad_y, pad_x = int(margin * height), int(margin * width)
    top, bottom = max(ys.min() - pad_y, 0), min(ys.max() + pad_y + 1, height)
    left, right = max(xs.min() - pad_x, 0), min(xs.max() + pad_x + 1, width)
    if min(bottom - top, right - left) < MIN_SIDE // 2:
        return gray
    return gray[top:bottom, left:right]


class MriVggImageProcessor(BaseImageProcessor):
    r"""Deterministic MRI preprocessing: grayscale, crop, resize, denoise, equalise, 3 channels, normalise.

    Args:
        image_size (`int`, *optional*, defaults to 224): output height and width.
        crop_foreground (`bool`, *optional*, defaults to `True`): crop to the head's bounding box first,
            so framing and black borders differ less between scanners.
        resize_mode (`str`, *optional*, defaults to `"pad"`): `"pad"` keeps the aspect ratio and pads with
            black; `"stretch"` resizes straight to a square.
        denoise (`str`, *optional*, defaults to `"median"`): `"median"`, `"gaussian"`, `"nlmeans"` or `"none"`.
        equalize (`str`, *optional*, defaults to `"clahe"`): `"clahe"`, `"global"` or `"none"`.
        clahe_clip_limit (`float`, *optional*, defaults to 2.0): CLAHE contrast limit.
        clahe_tile_grid (`int`, *optional*, defaults to 8): CLAHE tiles per side.
        image_mean / image_std (`list[float]`, *optional*, defaults to ImageNet's): per-channel normalisation.
        max_pixels (`int`, *optional*, defaults to 40,000,000): larger inputs are refused.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 224,
        crop_foreground: bool = True,
        resize_mode: str = "pad",
        denoise: str = "median",
        equalize: str = "clahe",
        clahe_clip_limit: float = 2.0,
        clahe_tile_grid: int = 8,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        **kwargs: Any,
    ) -> None:
        for field, value, choices in (
            ("denoise", denoise, DENOISE_CHOICES),
            ("equalize", equalize, EQUALIZE_CHOICES),
            ("resize_mode", resize_mode, RESIZE_CHOICES),
        ):
            if value not in choices:
                raise ValueError(f"{field} must be one of {choices}, got {value!r}")
        if int(image_size) < MIN_SIDE:
            raise ValueError(f"image_size must be >= {MIN_SIDE}, got {image_size}")
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.crop_foreground = bool(crop_foreground)
        self.resize_mode = resize_mode
        self.denoise = denoise
        self.equalize = equalize
        self.clahe_clip_limit = float(clahe_clip_limit)
        self.clahe_tile_grid = int(clahe_tile_grid)
        self.image_mean = list(image_mean) if image_mean is not None else list(IMAGENET_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(IMAGENET_STD)
        self.max_pixels = int(max_pixels)

    def prepare_grayscale(self, image: ImageLike) -> np.ndarray:
        """Everything but normalisation: load/convert, crop, resize, denoise, equalise -> uint8 (S, S)."""
        name = _name(image)
        pil_or_array = load_image(image, self.max_pixels)
        try:
            gray = to_grayscale_uint8(pil_or_array)
        except MriImageError:
            raise
        except Exception as err:
            raise MriImageError(f"{name}: cannot convert image to grayscale ({err})") from err
        if self.crop_foreground:
            gray = crop_to_foreground(gray)
        gray = self._resize(gray)
        if self.denoise == "median":
            gray = cv2.medianBlur(gray, 3)
        elif self.denoise == "gaussian":
            gray = cv2.GaussianBlur(gray, (3, 3), 0)
        elif self.denoise == "nlmeans":
            gray = cv2.fastNlMeansDenoising(gray, None, h=7, templateWindowSize=7, searchWindowSize=21)
        if self.equalize == "clahe":
            clahe = cv2.createCLAHE(self.clahe_clip_limit, (self.clahe_tile_grid, self.clahe_tile_grid))
            gray = clahe.apply(gray)
        elif self.equalize == "global":
            gray = cv2.equalizeHist(gray)
        return gray

    def _resize(self, gray: np.ndarray) -> np.ndarray:
        size = self.image_size
        height, width = gray.shape
        if self.resize_mode == "stretch":
            new_w, new_h = size, size
        else:
            scale = size / max(height, width)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        shrinking = new_w * new_h < width * height
        resized = cv2.resize(gray, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        if (new_w, new_h) == (size, size):
            return resized
        canvas = np.zeros((size, size), dtype=np.uint8)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = resized
        return canvas

    def normalize_grayscale(self, gray: np.ndarray) -> np.ndarray:
        """uint8 (S, S) -> float32 (3, S, S), rescaled to [0, 1] and normalised per channel."""
        scaled = gray.astype(np.float32) / 255.0
        mean = np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.image_std, dtype=np.float32)[:, None, None]
        return (np.broadcast_to(scaled, (3, *scaled.shape)) - mean) / std

    def overlay_heatmap(self, gray: np.ndarray, heatmap: Any, alpha: float = 0.5) -> np.ndarray:
        """Blend a [0, 1] heat map (H, W; array or tensor) in the JET colormap over `prepare_grayscale`'s
        uint8 image: cold areas stay gray, hot ones turn red. Returns RGB uint8 (S, S, 3)."""
        heat = np.asarray(heatmap.detach().cpu() if hasattr(heatmap, "detach") else heatmap, dtype=np.float32)
        if heat.shape != gray.shape:
            heat = cv2.resize(heat, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
        heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
        color = cv2.cvtColor(
            cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
        )
        weight = (alpha * heat)[..., None]
        blended = (1.0 - weight) * np.repeat(gray[..., None], 3, axis=2) + weight * color
        return np.clip(np.round(blended), 0, 255).astype(np.uint8)

    def preprocess(self, images: ImageLike | Sequence[ImageLike], return_tensors: str | None = "pt", **kwargs: Any):
        """Preprocess one image or a list of images (PIL, numpy arrays or paths) into `pixel_values`."""
        if kwargs:
            raise TypeError(f"unexpected preprocess arguments: {sorted(kwargs)}")
        if isinstance(images, (Image.Image, np.ndarray, str, os.PathLike)):
            images = [images]
        pixel_values = [self.normalize_grayscale(self.prepare_grayscale(image)) for image in images]
        return BatchFeature(data={"pixel_values": np.stack(pixel_values)}, tensor_type=return_tensors)

    def __call__(self, images: ImageLike | Sequence[ImageLike], **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)
