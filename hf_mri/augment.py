"""Training-only random augmentation (torchvision.transforms.v2) and the dataset transform that applies it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from datasets import DatasetDict
from PIL import Image
from torchvision.transforms import v2

from .image_processing_mri_vgg import DEFAULT_MAX_PIXELS, MriImageError, load_image, to_grayscale_uint8

__all__ = ["AugmentationConfig", "MriAugmentation", "build_augmentation", "with_transforms"]

logger = logging.getLogger(__name__)


@dataclass
class AugmentationConfig:
    r"""Random augmentation of training images; each transform fires with its own probability.

    Args:
        enabled (`bool`, *optional*, defaults to `True`): `False` turns augmentation off altogether.
        hflip_prob (`float`, *optional*, defaults to 0.5): probability of a left-right flip.
        rotation_prob (`float`, *optional*, defaults to 0.5): probability of a rotation.
        rotation_degrees (`float`, *optional*, defaults to 15.0): rotation angle drawn from [-d, d].
        affine_prob (`float`, *optional*, defaults to 0.5): probability of a translation and scaling.
        translate (`float`, *optional*, defaults to 0.05): largest shift, as a fraction of width and height.
        scale_min / scale_max (`float`, *optional*, defaults to 0.95 / 1.05): range of the zoom factor.
        jitter_prob (`float`, *optional*, defaults to 0.5): probability of brightness/contrast jitter.
        brightness / contrast (`float`, *optional*, defaults to 0.1): factors drawn from [1 - b, 1 + b].
        gamma_prob (`float`, *optional*, defaults to 0.0): probability of a random gamma from `gamma_range`.
        gamma_range (`tuple[float, float]`, *optional*, defaults to (0.6, 1.6)): gamma drawn uniformly from it.
        equalize_prob (`float`, *optional*, defaults to 0.0): probability of global histogram equalisation.
        blur_prob (`float`, *optional*, defaults to 0.0): probability of a small Gaussian blur.
        invert_prob (`float`, *optional*, defaults to 0.0): probability of inverting intensities (T1/T2-like swap).

    `AugmentationConfig.preset("strong")` adds intensity changes (gamma, equalisation, blur, stronger jitter)
    and stronger framing changes, so that contrast and framing are weaker cues than anatomy.
    """

    enabled: bool = field(default=True, metadata={"help": "Random augmentation of the training split."})
    hflip_prob: float = 0.5
    rotation_prob: float = 0.5
    rotation_degrees: float = 15.0
    affine_prob: float = 0.5
    translate: float = 0.05
    scale_min: float = 0.95
    scale_max: float = 1.05
    jitter_prob: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.6, 1.6)
    equalize_prob: float = 0.0
    blur_prob: float = 0.0
    invert_prob: float = 0.0

    @classmethod
    def preset(cls, name: str) -> AugmentationConfig:
        """`"none"`, `"light"` (the defaults) or `"strong"` (intensity and framing changes too)."""
        presets = {
            "none": {"enabled": False},
            "light": {},
            "strong": {
                "translate": 0.1, "scale_min": 0.8, "scale_max": 1.15, "affine_prob": 0.7, "brightness": 0.25,
                "contrast": 0.3, "jitter_prob": 0.7, "gamma_prob": 0.5, "equalize_prob": 0.2, "blur_prob": 0.2,
                "invert_prob": 0.2,
            },
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"augmentation preset must be one of {sorted(presets)}, got {name!r}")
        return cls(**presets[name])

    def __post_init__(self) -> None:
        low, high = self.gamma_range
        if not 0.0 < low <= high:
            raise ValueError(f"gamma_range must be (low, high) with 0 < low <= high, got {self.gamma_range}")
        for name in ("hflip_prob", "rotation_prob", "affine_prob", "jitter_prob", "gamma_prob", "equalize_prob",
                     "blur_prob", "invert_prob"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        checks = (
            ("rotation_degrees", 0.0 <= self.rotation_degrees <= 180.0, "in [0, 180]"),
            ("translate", 0.0 <= self.translate < 1.0, "in [0, 1)"),
            ("scale_min", 0.0 < self.scale_min <= self.scale_max, f"in (0, scale_max={self.scale_max}]"),
            ("brightness", 0.0 <= self.brightness < 1.0, "in [0, 1)"),
            ("contrast", 0.0 <= self.contrast < 1.0, "in [0, 1)"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)}")


class _RandomGamma(torch.nn.Module):
    """Gamma correction with gamma drawn uniformly from [low, high] (torch RNG)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, image: Image.Image) -> Image.Image:
        gamma = self.low + (self.high - self.low) * float(torch.rand(()))
        return v2.functional.adjust_gamma(image, gamma)


class MriAugmentation:
    """PIL image -> randomly augmented PIL image. "L" and "RGB" keep their mode; any other mode (16-bit, RGBA,
    palette, ...) is first converted to 8-bit grayscale the way the image processor would. Uses torch's RNG,
    so `torch.manual_seed` makes it repeatable (and DataLoader workers get distinct streams)."""

    def __init__(self, config: AugmentationConfig) -> None:
        self.config = config
        c = config
        self.transform = v2.Compose(
            [
                v2.RandomHorizontalFlip(p=c.hflip_prob),
                v2.RandomApply([v2.RandomRotation(degrees=c.rotation_degrees, fill=0)], p=c.rotation_prob),
                v2.RandomApply(
                    [
                        v2.RandomAffine(
                            degrees=0, translate=(c.translate, c.translate), scale=(c.scale_min, c.scale_max)
                        )
                    ],
                    p=c.affine_prob,
                ),
                v2.RandomApply([v2.ColorJitter(brightness=c.brightness, contrast=c.contrast)], p=c.jitter_prob),
                v2.RandomApply([_RandomGamma(*c.gamma_range)], p=c.gamma_prob),
                v2.RandomEqualize(p=c.equalize_prob),
                v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.3, 1.5))], p=c.blur_prob),
                v2.RandomInvert(p=c.invert_prob),
            ]
        )

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode not in ("L", "RGB"):
            image = Image.fromarray(to_grayscale_uint8(image))
        return self.transform(image)

    def __repr__(self) -> str:
        return f"MriAugmentation({self.config})"


def build_augmentation(config: AugmentationConfig | None = None) -> MriAugmentation | None:
    """The training augmentation for `config` (defaults if `None`), or `None` when `config.enabled` is off."""
    config = config if config is not None else AugmentationConfig()
    return MriAugmentation(config) if config.enabled else None


class _ToModelInputs:
    """Batch transform: path -> `load_image` -> augmentation (train only) -> processor -> model inputs.

    A file that fails here (it passed the up-front check in `load_splits`, so it changed on disk since) is
    logged and replaced by the next readable item of the same split, with that item's label, so one bad file
    cannot stop a long run.
    """

    def __init__(self, processor: Callable, augmentation: Callable | None, paths: list[str], labels: list[int]):
        self.processor, self.augmentation = processor, augmentation
        self.paths, self.labels = paths, labels
        self.index = {p: i for i, p in enumerate(paths)}
        self.max_pixels = getattr(processor, "max_pixels", DEFAULT_MAX_PIXELS)

    def _encode(self, path: str) -> torch.Tensor:
        image = load_image(path, self.max_pixels)
        if self.augmentation is not None:
            image = self.augmentation(image)
        pixel_values = self.processor([image], return_tensors="pt")["pixel_values"][0]
        return torch.as_tensor(pixel_values, dtype=torch.float32)

    def _item(self, path: str, label: int) -> tuple[torch.Tensor, float]:
        try:
            return self._encode(path), float(label)
        except Exception as err:  # see the class docstring
            logger.warning("Replacing unreadable %s by the next image of its split: %s", path, err)
        start = self.index.get(path, -1)
        for step in range(1, min(len(self.paths), 100) + 1):
            other = (start + step) % len(self.paths)
            try:
                return self._encode(self.paths[other]), float(self.labels[other])
            except Exception:  # keep looking
                continue
        raise MriImageError(f"{path}: unreadable, and no readable image of its split could replace it")

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        items = [self._item(path, label) for path, label in zip(batch["path"], batch["label"])]
        return {
            "pixel_values": torch.stack([pixels for pixels, _ in items]),
            "labels": torch.tensor([label for _, label in items], dtype=torch.float32),
        }


def with_transforms(
    dataset_dict: DatasetDict, processor: Callable, augmentation: Callable | None = None
) -> DatasetDict:
    """The splits of `load_splits` with an on-the-fly transform (`Dataset.with_transform`): items become
    `{"pixel_values": float tensor (3, H, W), "labels": float tensor 0./1.}`. `augmentation` (PIL -> PIL, e.g.
    `build_augmentation(...)`) runs on the `train` split only, on the image from `load_image`, before `processor`.
    """
    out = {}
    for name, part in dataset_dict.items():
        paths, labels = list(part["path"]), list(part["label"])
        transform = _ToModelInputs(processor, augmentation if name == "train" else None, paths, labels)
        out[name] = part.with_transform(transform, columns=["path", "label"])
    return DatasetDict(out)
