"""The Gradio Space: serves a local tiny model on 127.0.0.1, /predict returns probabilities, bad files get a
friendly message; its README and requirements are pinned to what is installed."""

import importlib.metadata
import importlib.util
import socket

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY
from huggingface_hub import metadata_load
from PIL import Image

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor

SPACE = REPO_ROOT / "space"


def load_app():
    """`space/app.py` as a module (it is not part of the hf_mri package and must not import it)."""
    spec = importlib.util.spec_from_file_location("mri_space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_model(folder, threshold=0.5):
    torch.manual_seed(0)
    model = MriVggForImageClassification(MriVggConfig(**TINY, threshold=threshold)).eval()
    model.save_pretrained(folder)
    MriVggImageProcessor(image_size=TINY["image_size"]).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """(url, model folder): the Space launched on a free localhost port with a tiny local model."""
    folder = tmp_path_factory.mktemp("space_model")
    save_tiny_model(folder, threshold=0.4)
    demo = load_app().build_demo(str(folder))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, ssr_mode=False, quiet=True)
    try:
        yield demo.local_url, folder
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(space):
    from gradio_client import Client

    return Client(space[0], verbose=False, analytics_enabled=False, download_files=False)


def _predict(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/predict")


def _expected_probability(folder, path) -> float:
    model = MriVggForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(**MriVggImageProcessor.from_pretrained(folder)(path, return_tensors="pt")).logits
    return float(torch.sigmoid(logits)[0, 0])


@pytest.mark.slow
def test_predict_returns_probabilities_label_and_grad_cam(space, client):
    example = sorted((SPACE / "examples").glob("glioma_*"))[0]
    label, verdict, preview, overlay = _predict(client, example)

    confidences = {row["label"]: row["confidence"] for row in label["confidences"]}
    assert set(confidences) == {"tumor", "no_tumor"}
    assert confidences["tumor"] + confidences["no_tumor"] == pytest.approx(1.0)
    assert confidences["tumor"] == pytest.approx(_expected_probability(space[1], example), abs=1e-5)
    assert label["label"] == max(confidences, key=confidences.get)
    called = "tumor" if confidences["tumor"] >= 0.4 else "no_tumor"
    assert f"**{called}**" in verdict and "threshold 0.40" in verdict and "not for diagnosis" in verdict
    assert preview and overlay  # images come back as files


def _dicom(path, rows=96, cols=80):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = (
        "MR",
        rows,
        cols,
        1,
        "MONOCHROME2",
    )
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 4000, (rows, cols)).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.slow
def test_dicom_upload_is_scored(space, client, tmp_path):
    label, verdict, _, _ = _predict(client, _dicom(tmp_path / "slice.dcm"))
    tumor = {row["label"]: row["confidence"] for row in label["confidences"]}["tumor"]
    assert tumor == pytest.approx(_expected_probability(space[1], tmp_path / "slice.dcm"), abs=1e-5)


def _text(path):
    path.write_text("this is not an image\n")
    return path


def _oversized(path):
    with open(path, "wb") as handle:  # sparse 21 MB file
        handle.truncate(21 * 2**20)
    return path


def _too_many_pixels(path):
    Image.new("L", (5000, 4000)).save(path)  # compresses to a few KB, 20 megapixels
    return path


def _tiny(path):
    Image.new("L", (16, 16)).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, make, message",
    [
        ("notes.txt", _text, "not an image format"),
        ("fake.png", _text, "not an image format"),
        ("huge.png", _oversized, "at most 20 MB"),
        ("wide.png", _too_many_pixels, "exceeds the limit"),
        ("tiny.png", _tiny, "32-pixel minimum"),
    ],
)
def test_bad_uploads_get_a_friendly_message(client, tmp_path, name, make, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message) as info:
        _predict(client, make(tmp_path / name))
    text = str(info.value)
    assert "Traceback" not in text and str(tmp_path) not in text and "/tmp/gradio" not in text


def test_app_does_not_import_hf_mri():
    source = (SPACE / "app.py").read_text()
    assert "hf_mri" not in source.replace("hf_mri.hub", "")
    assert 'if __name__ == "__main__":' in source and 'api_name="predict"' in source


def test_space_readme_requirements_and_examples():
    meta = metadata_load(SPACE / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] and meta["license"]
    assert meta["sdk_version"] == importlib.metadata.version("gradio")
    readme = (SPACE / "README.md").read_text()
    assert "not for diagnosis" in readme and "Masoud Nickparvar" in readme
    pins = dict(line.split("==") for line in (SPACE / "requirements.txt").read_text().splitlines() if "==" in line)
    assert {"torch", "torchvision", "transformers", "opencv-python-headless", "pydicom", "numpy", "pillow",
            "safetensors"} <= set(pins)  # fmt: skip
    for package, version in pins.items():
        assert importlib.metadata.version(package) == version, package
    examples = sorted(p.name for p in (SPACE / "examples").iterdir())
    assert sum(n.startswith("notumor") for n in examples) == 2 and len(examples) == 4
    for example in examples:
        assert Image.open(SPACE / "examples" / example).size >= (32, 32)
