"""Hostile files through the processor, scripts/predict.py, scripts/evaluate.py and the Space: each bad one gets a
message naming the file and the problem, valid odd ones are scored correctly, and the rest of the batch goes on."""

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY, load_script, make_mri_folder
from PIL import Image
from reliability_support import SCRIPTS, subprocess_env
from test_space import free_port, load_app, save_tiny_model

from hf_mri import MriImageError, MriVggImageProcessor
from hf_mri.image_processing_mri_vgg import load_image


def _head(width: int = 96, height: int = 72, seed: int = 0) -> np.ndarray:
    """An asymmetric head-like slice: ellipse, texture and a bright blob off-centre (so rotations differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    head = ((xx - width / 2) / (width * 0.4)) ** 2 + ((yy - height / 2) / (height * 0.42)) ** 2 < 1
    image = head * rng.integers(40, 140, size=(height, width))
    image[(xx - width * 0.62) ** 2 + (yy - height * 0.35) ** 2 < (height * 0.1) ** 2] = 250
    return image.astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int = 100_000) -> None:
    """467 bytes whose header claims a side x side grayscale image (10 gigapixels for the default)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 4, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def exif_rotated_jpeg(path: Path) -> None:
    """A JPEG stored sideways with EXIF Orientation 6 (display rotated 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_head()).save(path, exif=exif.tobytes(), quality=95)


def animated_gif(path: Path) -> None:
    frames = [Image.fromarray(_head(seed=seed)) for seed in (1, 2, 3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def huge_dicom(path: Path) -> None:
    """pydicom's MR_small.dcm (64x64) with a header claiming 30000x30000 pixels."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.Rows = ds.Columns = 30_000
    ds.save_as(path)


def dicom(path: Path, pixels: np.ndarray, syntax: str = "1.2.840.10008.1.2.1") -> Path:
    """Write `pixels` (rows, cols), (frames, rows, cols) uint16 or (rows, cols, 3) uint8 RGB as an MR DICOM file,
    in the given transfer syntax (default explicit VR little endian; RLE and deflate are compressed)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import MRImageStorage, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = syntax if syntax != RLELossless else "1.2.840.10008.1.2.1"
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PixelRepresentation = "MR", 0
    rgb = pixels.ndim == 3 and pixels.shape[-1] == 3
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3, "RGB") if rgb else (1, "MONOCHROME2")
    if rgb:
        ds.PlanarConfiguration = 0
    elif pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelData = pixels.tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless, pixels, encoding_plugin="pydicom")
    ds.save_as(path, enforce_file_format=True)
    return path


SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"><circle cx="9" cy="9" r="9"/></svg>'
HTML = "<!DOCTYPE html><html><body><script>alert('hi')</script><img src=x onerror=alert(1)></body></html>"

# name -> (writer, None if valid and must be scored, else a piece of the expected message)
HOSTILE = {
    "bomb.png": (png_bomb, "decompression bomb"),
    "one_pixel.png": (lambda p: Image.new("L", (1, 1), 99).save(p), "1x1 pixels is below the 32-pixel minimum"),
    "cmyk.jpg": (lambda p: Image.fromarray(_head()).convert("CMYK").save(p), None),
    "rotated.jpg": (exif_rotated_jpeg, None),
    "animated.gif": (animated_gif, None),
    "drawing.png": (lambda p: p.write_text(SVG), "not an image format"),
    "page.png": (lambda p: p.write_text(HTML), "not an image format"),
    "noise.jpg": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not an image format"),
    "noise.dcm": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000)), "not a readable DICOM"),
    "huge.dcm": (huge_dicom, "30000x30000 pixels exceeds the limit"),
    "deep16.png": (lambda p: Image.fromarray(_head().astype(np.uint16) * 250).save(p), None),
    "rgb.dcm": (lambda p: dicom(p, np.stack([_head(seed=4)] * 3, axis=-1)), None),
}
INVALID = sorted(name for name, (_, message) in HOSTILE.items() if message)


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for name, (write, _) in HOSTILE.items():
        write(folder / name)
    return folder


@pytest.fixture(scope="module")
def processor() -> MriVggImageProcessor:
    return MriVggImageProcessor(image_size=TINY["image_size"])


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_processor_scores_or_names_the_problem(hostile_dir, processor, name):
    message = HOSTILE[name][1]
    if message is None:
        gray = processor.prepare_grayscale(hostile_dir / name)
        assert gray.shape == (TINY["image_size"],) * 2 and gray.dtype == np.uint8 and gray.std() > 0
    else:
        with pytest.raises(MriImageError, match=message) as info:
            processor.prepare_grayscale(hostile_dir / name)
        assert name in str(info.value)
    assert (hostile_dir / name).stat().st_size < 60_000  # every hostile file is small on disk


def _save(array_or_image, path: Path) -> Path:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(path)
    return path


def test_exif_orientation_is_honoured(hostile_dir, processor, tmp_path):
    stored = Image.open(hostile_dir / "rotated.jpg")  # pixels as stored, orientation not applied
    assert stored.getexif()[0x0112] == 6 and stored.size == (96, 72)
    upright = _save(stored.transpose(Image.Transpose.ROTATE_270), tmp_path / "upright.png")
    sideways = _save(stored.copy(), tmp_path / "sideways.png")
    ours = processor.prepare_grayscale(hostile_dir / "rotated.jpg")
    np.testing.assert_array_equal(ours, processor.prepare_grayscale(upright))
    assert not np.array_equal(ours, processor.prepare_grayscale(sideways))


def test_animated_gif_uses_its_first_frame(hostile_dir, processor, tmp_path):
    gif = Image.open(hostile_dir / "animated.gif")
    assert gif.n_frames == 3
    firsts = _save(gif.convert("L"), tmp_path / "frame0.png")
    gif.seek(1)
    seconds = _save(gif.convert("L"), tmp_path / "frame1.png")
    ours = processor.prepare_grayscale(hostile_dir / "animated.gif")
    np.testing.assert_array_equal(ours, processor.prepare_grayscale(firsts))
    assert not np.array_equal(ours, processor.prepare_grayscale(seconds))


def test_16_bit_png_keeps_its_full_range(hostile_dir, processor, tmp_path):
    deep = np.asarray(Image.open(hostile_dir / "deep16.png"))
    assert deep.dtype.itemsize == 2 and deep.max() > 255  # really 16-bit, values beyond 8 bits
    scaled = np.round(deep.astype(np.float32) * (255.0 / float(deep.max())))  # min-max to 8 bits (min is 0)
    eight = processor.prepare_grayscale(_save(scaled.astype(np.uint8), tmp_path / "eight.png"))
    np.testing.assert_array_equal(processor.prepare_grayscale(hostile_dir / "deep16.png"), eight)


def test_multiframe_dicom_decodes_only_its_middle_slice(tmp_path):
    import tracemalloc

    frames = np.zeros((96, 128, 128), np.uint16)
    for index in range(len(frames)):
        frames[index, 20:100, index : index + 32] = 100 + index  # a bar that moves frame by frame
    path = dicom(tmp_path / "volume.dcm", frames, "1.2.840.10008.1.2.5")  # RLE lossless: 96 x 32 KiB in ~60 KB
    tracemalloc.start()
    try:
        image = load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(np.asarray(image), np.where(frames[48] > 0, 255, 0))
    assert peak < frames.nbytes / 2, f"peak {peak} bytes: the whole volume ({frames.nbytes} bytes) was decoded"


def test_deflated_dicom_loads_and_a_deflate_bomb_is_refused_before_inflating(tmp_path):
    import tracemalloc

    pixels = _head(64, 64).astype(np.uint16) * 16
    deflated = dicom(tmp_path / "small_deflated.dcm", pixels, "1.2.840.10008.1.2.1.99")
    plain = dicom(tmp_path / "small_plain.dcm", pixels)
    np.testing.assert_array_equal(np.asarray(load_image(deflated)), np.asarray(load_image(plain)))
    bomb = dicom(tmp_path / "bomb.dcm", np.zeros((1600, 1600), np.uint16), "1.2.840.10008.1.2.1.99")
    assert bomb.stat().st_size < 20_000  # 5 MB of pixels deflated to a few KB
    tracemalloc.start()
    try:
        with pytest.raises(MriImageError, match="bomb.dcm: deflated DICOM inflates to more than 1000000 bytes"):
            load_image(bomb, max_pixels=250_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, f"peak {peak} bytes: the file was inflated before being refused"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    save_tiny_model(folder, threshold=0.5)
    return folder


def _batch(hostile_dir: Path, good_dir: Path) -> list[str]:
    """Hostile files interleaved with good ones, so a failure could hide good results around it."""
    good = sorted(good_dir.rglob("*.png"))
    hostile = [hostile_dir / name for name in sorted(HOSTILE)]
    return [str(p) for pair in zip(good, hostile) for p in pair] + [str(p) for p in good[len(hostile) :]]


@pytest.mark.slow
def test_predict_script_reports_each_hostile_file_and_scores_the_rest(hostile_dir, model_dir, tmp_path):
    good_dir = make_mri_folder(tmp_path / "good", n_per_class=7)
    files = _batch(hostile_dir, good_dir)
    command = [sys.executable, str(SCRIPTS / "predict.py"), "--model", str(model_dir), "--batch_size", "4", *files]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=subprocess_env())
    assert run.returncode == 1, run.stderr[-3000:]  # a normal exit saying "some files failed", not a crash
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [row["path"] for row in rows] == files
    errors = {Path(row["path"]).name: row["error"] for row in rows if "error" in row}
    assert sorted(errors) == INVALID
    for name, error in errors.items():
        assert name in error and HOSTILE[name][1] in error and "Traceback" not in error
    scored = [row for row in rows if "error" not in row]
    assert len(scored) == 14 + len(HOSTILE) - len(INVALID)
    assert all(0.0 <= row["p_tumor"] <= 1.0 and row["label"] in ("tumor", "no_tumor") for row in scored)


def test_evaluate_script_skips_hostile_files_and_scores_the_rest(hostile_dir, model_dir, tmp_path):
    data = make_mri_folder(tmp_path / "data", n_per_class=4)
    for index, name in enumerate(sorted(HOSTILE)):
        (data / ("glioma", "notumor")[index % 2] / name).write_bytes((hostile_dir / name).read_bytes())
    metrics = load_script("evaluate").main(["--model", str(model_dir), "--data_dir", str(data),
                                            "--output_dir", str(tmp_path / "eval"), "--batch_size", "4"])  # fmt: skip
    assert metrics["eval_files_found"] == 8 + len(HOSTILE)
    assert metrics["eval_files_skipped"] == len(INVALID)
    for name in INVALID:
        assert any(name in reason and HOSTILE[name][1] in reason for reason in metrics["eval_skipped"]), name
    (tn, fp), (fn, tp) = metrics["eval_confusion_matrix"]
    assert tn + fp + fn + tp == 8 + len(HOSTILE) - len(INVALID)


@pytest.fixture(scope="module")
def space_client(model_dir):
    from gradio_client import Client

    demo = load_app().build_demo(str(model_dir))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, ssr_mode=False, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
    finally:
        demo.close()


def _expected_p_tumor(model_dir: Path, path: Path) -> float:
    from hf_mri import MriVggForImageClassification

    model = MriVggForImageClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(**MriVggImageProcessor.from_pretrained(model_dir)(path, return_tensors="pt")).logits
    return float(torch.sigmoid(logits)[0, 0])


@pytest.mark.slow
def test_space_answers_every_hostile_upload_and_stays_up(hostile_dir, model_dir, space_client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    good = make_mri_folder(tmp_path / "good", n_per_class=1) / "glioma" / "glioma_000.png"
    for name in [*sorted(HOSTILE), good.name]:
        path = good if name == good.name else hostile_dir / name
        message = HOSTILE.get(name, (None, None))[1]
        if message is None:
            label, verdict, preview, overlay = space_client.predict(handle_file(str(path)), api_name="/predict")
            tumor = {row["label"]: row["confidence"] for row in label["confidences"]}["tumor"]
            assert tumor == pytest.approx(_expected_p_tumor(model_dir, path), abs=1e-5), name
            assert "not for diagnosis" in verdict and preview and overlay
        else:
            with pytest.raises(AppError, match=message) as info:
                space_client.predict(handle_file(str(path)), api_name="/predict")
            text = str(info.value)
            assert name in text and "Traceback" not in text and str(hostile_dir) not in text and "/tmp/" not in text
