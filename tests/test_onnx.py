"""ONNX export: dynamic batch, logits within 1e-4 of PyTorch, config in the file, predict_files runs on it."""

import sys

import pytest
import torch
from conftest import REPO_ROOT, TINY, make_mri_folder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor  # noqa: E402
from hf_mri.inference import predict_files  # noqa: E402
from hf_mri.onnx_export import OnnxClassifier, export_onnx, load_onnx_model, max_logit_difference  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = MriVggForImageClassification(MriVggConfig(**TINY, batch_norm=True, threshold=0.3)).eval()
    folder = tmp_path_factory.mktemp("onnx")
    path = export_onnx(model, folder / "model.onnx")
    images = sorted(str(p) for p in make_mri_folder(folder / "mri", n_per_class=3).rglob("*.png"))
    return model, path, images


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_logits_match_pytorch_on_images(exported, batch):
    model, path, images = exported
    pixels = MriVggImageProcessor(image_size=TINY["image_size"])(images[:batch])["pixel_values"]
    assert pixels.shape[0] == batch
    assert max_logit_difference(model, OnnxClassifier(path, num_threads=1), pixels) <= 1e-4


def test_graph_has_named_io_and_a_dynamic_batch_axis(exported):
    import onnx

    _, path, _ = exported
    graph = onnx.load(str(path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["pixel_values"] and [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]


def test_config_travels_in_the_file_and_wrong_sizes_are_refused(exported):
    model, path, _ = exported
    onnx_model = OnnxClassifier(path)
    assert onnx_model.config.threshold == 0.3 and onnx_model.config.id2label == model.config.id2label
    with pytest.raises(ValueError, match=r"shape \(batch, 3, 64, 64\).*image_size=64"):
        onnx_model(torch.zeros(1, 3, 32, 32))


def test_predict_files_gives_the_same_probabilities(exported):
    model, path, images = exported
    processor = MriVggImageProcessor(image_size=TINY["image_size"])
    bad = images[0] + ".missing.png"
    expected = list(predict_files(model, processor, [*images, bad], batch_size=4, progress=False))
    got = list(predict_files(OnnxClassifier(path), processor, [*images, bad], batch_size=4, progress=False))
    assert [row["path"] for row in got] == [row["path"] for row in expected] and "error" in got[-1]
    for mine, theirs in zip(got[:-1], expected[:-1]):
        assert mine["label"] == theirs["label"] and mine["p_tumor"] == pytest.approx(theirs["p_tumor"], abs=1e-5)


def test_export_script_on_a_saved_model_folder(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))  # here: importing a script takes scripts/ off sys.path
    import export_onnx as script

    torch.manual_seed(1)
    model = MriVggForImageClassification(MriVggConfig(**TINY))
    model.save_pretrained(tmp_path / "model")
    MriVggImageProcessor(image_size=TINY["image_size"]).save_pretrained(tmp_path / "model")
    assert script.main(["--model", str(tmp_path / "model")]) == 0
    onnx_model, processor = load_onnx_model(tmp_path / "model")
    assert processor.image_size == TINY["image_size"]
    pixels = torch.randn(2, 3, 64, 64)
    assert max_logit_difference(model, onnx_model, pixels) <= 1e-4
