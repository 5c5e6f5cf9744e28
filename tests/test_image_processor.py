"""MriVggImageProcessor: every input mode and size -> (3, S, S) float32, deterministic, save/load stable."""

import io

import numpy as np
import pytest
from PIL import Image

from hf_mri import MriImageError, MriVggImageProcessor

SIZE = 64


def _brain(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A bright ellipse with texture on a black background, like an axial slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx - width / 2) / (width * 0.4)) ** 2 + ((yy - height / 2) / (height * 0.4)) ** 2 < 1
    return (inside * rng.integers(60, 255, size=(height, width))).astype(np.uint8)


def _pil(mode: str, width: int = 200, height: int = 160) -> Image.Image:
    gray = _brain(width, height)
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)
    return Image.fromarray(gray).convert("RGB").convert(mode)


CASES = [
    *[(mode, _pil(mode)) for mode in ("L", "RGB", "RGBA", "P", "CMYK", "LA", "I", "F", "I;16")],
    ("32px", _pil("L", 32, 32)),
    ("2000x1500", _pil("L", 2000, 1500)),
    ("tall", _pil("L", 90, 400)),
    ("array uint8", _brain(120, 100)),
    ("array rgb", np.stack([_brain(120, 100)] * 3, axis=-1)),
    ("array uint16", _brain(120, 100).astype(np.uint16) * 40),
    ("array float", _brain(120, 100).astype(np.float32) / 255.0),
]


@pytest.mark.parametrize(("name", "image"), CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("resize_mode", ["pad", "stretch"])
def test_every_input_gives_finite_deterministic_output(name, image, resize_mode, tmp_path):
    processor = MriVggImageProcessor(image_size=SIZE, resize_mode=resize_mode)
    first = processor(image, return_tensors="np")["pixel_values"]
    assert first.shape == (1, 3, SIZE, SIZE) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, processor(image, return_tensors="np")["pixel_values"])
    processor.save_pretrained(tmp_path)
    reloaded = MriVggImageProcessor.from_pretrained(tmp_path)
    np.testing.assert_array_equal(first, reloaded(image, return_tensors="np")["pixel_values"])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_paths_and_16_bit_png(tmp_path, fmt):
    image = _pil("I;16") if fmt == "PNG" else _pil("L")
    path = tmp_path / f"scan.{fmt.lower()}"
    image.save(path, format=fmt)
    out = MriVggImageProcessor(image_size=SIZE)([path, str(path)], return_tensors="pt")["pixel_values"]
    assert tuple(out.shape) == (2, 3, SIZE, SIZE)


@pytest.mark.parametrize("denoise", ["median", "gaussian", "nlmeans", "none"])
@pytest.mark.parametrize("equalize", ["clahe", "global", "none"])
def test_every_option_runs(denoise, equalize):
    processor = MriVggImageProcessor(image_size=SIZE, denoise=denoise, equalize=equalize)
    assert np.isfinite(processor(_pil("L"), return_tensors="np")["pixel_values"]).all()


def test_output_is_normalised_with_imagenet_statistics():
    processor = MriVggImageProcessor(image_size=SIZE, crop_foreground=False, denoise="none", equalize="none")
    out = processor(Image.new("L", (64, 64), 255), return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(out[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-5)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated_jpeg(path):
    buffer = io.BytesIO()
    _pil("L").save(buffer, format="JPEG")
    return _write(path, buffer.getvalue()[:400])


def _bomb(path):
    Image.new("L", (7000, 7000)).save(path, format="PNG")
    return path


BAD = [
    ("missing.png", lambda p: p, "no such file"),
    ("empty.jpg", lambda p: _write(p, b""), "empty file"),
    ("notes.png", lambda p: _write(p, b"<svg xmlns='http://www.w3.org/2000/svg'></svg>"), "not an image"),
    ("random.jpg", lambda p: _write(p, np.random.default_rng(0).bytes(5000)), "not an image"),
    ("cut.jpg", _truncated_jpeg, "truncated"),
    ("tiny.png", lambda p: (_pil("L", 20, 20).save(p), p)[1], "below the 32-pixel minimum"),
    ("bomb.png", _bomb, "decompression bomb"),
]


@pytest.mark.parametrize(("name", "make", "message"), BAD, ids=[case[0] for case in BAD])
def test_bad_input_raises_one_error_type_naming_the_file(tmp_path, name, make, message):
    path = make(tmp_path / name)
    processor = MriVggImageProcessor(image_size=SIZE)
    with pytest.raises(MriImageError, match=message) as err:
        processor(path)
    assert name in str(err.value)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="denoise must be one of"):
        MriVggImageProcessor(denoise="wavelet")
