"""scripts/evaluate.py and scripts/predict.py on folders holding unreadable files: reported, never fatal."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY, load_script, make_mri_folder

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "model"
    MriVggForImageClassification(MriVggConfig(**TINY, threshold=0.4)).save_pretrained(folder)
    MriVggImageProcessor(image_size=TINY["image_size"]).save_pretrained(folder)
    return folder


@pytest.fixture
def messy_folder(tmp_path):
    root = make_mri_folder(tmp_path / "data", n_per_class=5)
    (root / "glioma" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notumor" / "empty.png").write_bytes(b"")
    return root


def test_evaluate_scores_a_folder_and_reports_bad_files(model_dir, messy_folder, tmp_path):
    evaluate_script = load_script("evaluate")

    out = tmp_path / "eval"
    metrics = evaluate_script.main(["--model", str(model_dir), "--data_dir", str(messy_folder),
                                    "--output_dir", str(out), "--batch_size", "4"])  # fmt: skip
    saved = json.loads((out / "eval_results.json").read_text())
    (tn, fp), (fn, tp) = saved["eval_confusion_matrix"]
    assert tn + fp + fn + tp == 10 and saved["eval_files_skipped"] == 2
    assert saved["eval_accuracy"] == pytest.approx((tn + tp) / 10) == metrics["eval_accuracy"]
    assert saved["eval_threshold"] == pytest.approx(0.4)
    assert any("broken.jpg" in reason for reason in saved["eval_skipped"])
    for name in ("confusion_matrix.png", "roc_curve.png", "predictions.csv"):
        assert (out / name).stat().st_size > 0


def test_predict_prints_one_json_line_per_file_and_an_error_line_for_bad_ones(model_dir, messy_folder, capsys):
    predict_script = load_script("predict")

    files = sorted(str(p) for p in messy_folder.rglob("*.*"))
    code = predict_script.main(["--model", str(model_dir), "--batch_size", "3", *files])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["path"] for row in lines] == files
    bad = {row["path"].rsplit("/", 1)[-1]: row["error"] for row in lines if "error" in row}
    assert set(bad) == {"broken.jpg", "empty.png"} and "empty file" in bad["empty.png"]
    good = [row for row in lines if "error" not in row]
    assert len(good) == 10 and all(0.0 <= row["p_tumor"] <= 1.0 for row in good)
    assert all(row["label"] == ("tumor" if row["p_tumor"] >= 0.4 else "no_tumor") for row in good)
    assert code == 1


def test_predict_onnx_backend_matches_pytorch(model_dir, messy_folder, capsys):
    pytest.importorskip("onnxruntime")
    from hf_mri.inference import load_model
    from hf_mri.onnx_export import export_onnx

    model, _ = load_model(model_dir)
    export_onnx(model, model_dir / "model.onnx")
    predict_script = load_script("predict")
    files = sorted(str(p) for p in messy_folder.rglob("*.png"))[:4]
    predict_script.main(["--model", str(model_dir), *files])
    eager = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predict_script.main(["--model", str(model_dir), "--backend", "onnx", *files])
    onnx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["label"] for row in onnx] == [row["label"] for row in eager]
    np.testing.assert_allclose([r["p_tumor"] for r in onnx], [r["p_tumor"] for r in eager], atol=1e-4)
