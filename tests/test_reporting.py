"""Reporting: PNG plots, atomic results JSON with NaN -> null, and the full evaluation report."""

import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

from hf_mri.metrics import compute_binary_metrics
from hf_mri.reporting import (
    plot_confusion_matrix,
    plot_roc_curve,
    write_evaluation_report,
    write_results_json,
)

Y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
P = [0.1, 0.2, 0.3, 0.6, 0.4, 0.45, 0.7, 0.8, 0.9, 0.95]


def _assert_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 5_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 300 and height >= 300
        extrema = image.convert("L").getextrema()
        assert extrema[0] < extrema[1]  # not a blank canvas


def _open_pyplot_figures() -> int:
    if "matplotlib.pyplot" not in sys.modules:  # reporting itself never imports pyplot
        return 0
    import matplotlib.pyplot as plt

    return len(plt.get_fignums())


@pytest.mark.parametrize(
    "cm",
    [[[3, 1], [2, 4]], np.array([[50, 0], [0, 0]]), [[0, 0], [0, 0]], np.array([[1000, 23], [7, 870]])],
    ids=["list", "one-class", "empty", "numpy"],
)
def test_plot_confusion_matrix_writes_png(tmp_path, cm):
    before = _open_pyplot_figures()
    path = plot_confusion_matrix(cm, tmp_path / "sub" / "cm.png", title="Test")
    assert path == tmp_path / "sub" / "cm.png"
    _assert_png(path)
    assert _open_pyplot_figures() == before


@pytest.mark.parametrize("cm", [[[1, 2, 3], [4, 5, 6]], [[1, -1], [0, 0]]])
def test_plot_confusion_matrix_rejects_bad_matrix(tmp_path, cm):
    with pytest.raises(ValueError, match="2x2"):
        plot_confusion_matrix(cm, tmp_path / "cm.png")


@pytest.mark.parametrize(
    ("probs", "labels", "threshold"),
    [
        (P, Y, 0.5),
        (P, Y, None),
        (np.linspace(0, 1, 200), (np.linspace(0, 1, 200) > 0.3).astype(int), 0.3),
        ([0.2, 0.7, 0.9], [1, 1, 1], 0.5),  # single class: figure says ROC undefined
        ([0.2, 0.7], [0, 0], None),
    ],
    ids=["small", "no-threshold", "separable", "only-positive", "only-negative"],
)
def test_plot_roc_curve_writes_png(tmp_path, probs, labels, threshold):
    before = _open_pyplot_figures()
    path = plot_roc_curve(probs, labels, tmp_path / "roc.png", threshold=threshold)
    _assert_png(path)
    assert _open_pyplot_figures() == before


@pytest.mark.parametrize(
    ("metrics", "prefix", "expected"),
    [
        ({"a": 1.0, "b": float("nan")}, None, {"a": 1.0, "b": None}),
        ({"accuracy": np.float32(0.5), "tp": np.int64(3)}, "test_", {"test_accuracy": 0.5, "test_tp": 3}),
        ({"accuracy": 0.5, "test_loss": 0.1}, "test", {"test_accuracy": 0.5, "test_loss": 0.1}),
        (
            {"cm": np.array([[1, 2], [3, 4]]), "ci": (0.1, np.float64("nan")), "inf": float("inf")},
            "eval",
            {"eval_cm": [[1, 2], [3, 4]], "eval_ci": [0.1, None], "eval_inf": None},
        ),
        ({"nested": {"x": np.nan, "y": [np.int32(1)]}}, None, {"nested": {"x": None, "y": [1]}}),
    ],
)
def test_write_results_json_round_trip(tmp_path, metrics, prefix, expected):
    path = write_results_json(metrics, tmp_path / "out" / "results.json", prefix=prefix)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == expected
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left behind


def test_write_results_json_overwrites_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    write_results_json({"a": 1}, path)
    write_results_json({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(TypeError):
        write_results_json({"a": object()}, path)
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("prefix", ["test", "eval"])
def test_write_evaluation_report(tmp_path, prefix):
    out = tmp_path / "run"
    result = write_evaluation_report(P, Y, out, prefix=prefix, threshold=0.5)
    expected = compute_binary_metrics(P, Y, 0.5)
    for key, value in expected.items():
        assert result[f"{prefix}_{key}"] == value
    assert result[f"{prefix}_confusion_matrix"] == [[3, 1], [2, 4]]
    assert json.loads((out / f"{prefix}_results.json").read_text()) == result
    _assert_png(out / "confusion_matrix.png")
    _assert_png(out / "roc_curve.png")


def test_write_evaluation_report_single_class_writes_null_auc(tmp_path):
    result = write_evaluation_report([0.3, 0.8, 0.9], [1, 1, 1], tmp_path)
    assert math.isnan(result["test_roc_auc"])
    saved = json.loads((tmp_path / "test_results.json").read_text())
    assert saved["test_roc_auc"] is None
    assert saved["test_confusion_matrix"] == [[0, 0], [1, 2]]
    _assert_png(tmp_path / "roc_curve.png")


def test_results_json_gets_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = write_results_json({"accuracy": 1.0}, tmp_path / "r.json")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
