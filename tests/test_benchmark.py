"""The benchmark runs end to end on a tiny VGG and writes every ratio as a finite positive number (no timing checks)."""

import json
import math
import sys

import pytest
from conftest import REPO_ROOT, TINY

pytest.importorskip("onnxruntime")

from hf_mri.benchmark import TARGETS, BenchmarkArguments, format_report, run_benchmark  # noqa: E402

TINY_FLAGS = [
    "--quick", "--image_size", "64", "--cache_image_size", "64", "--infer_image_size", "64", "--batch_size", "4",
    "--steps", "1", "--rounds", "1", "--epochs", "1", "--latency_iters", "2", "--max_images", "12",
    "--attribution", "True", "--model_overrides",
    json.dumps({k: v for k, v in TINY.items() if k != "image_size"}),
]  # fmt: skip


def test_benchmark_script_writes_every_ratio(tmp_path, capsys):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))  # here: importing a script takes scripts/ off sys.path
    import benchmark as script

    output = tmp_path / "bench.json"
    script.main([*TINY_FLAGS, "--output", str(output)])
    results = json.loads(output.read_text())
    for key in TARGETS:
        assert isinstance(results[key], float) and math.isfinite(results[key]) and results[key] > 0, key
        assert results["targets"][key]["met"] in (True, False)
    assert results["extra"]["onnx_max_abs_diff_b1"] <= 1e-4 and results["extra"]["onnx_max_abs_diff_b3"] <= 1e-4
    names = [row["name"] for row in results["rows"]]
    assert len(names) == 17 and "ONNX Runtime fp32" in names and "fp32 + channels_last" in names
    for row in results["rows"]:
        for column in ("images_per_s", "ms_per_batch", "gflop_per_image", "gflop_per_s", "peak_rss_mib"):
            if row["section"] != "data pipeline" or column not in ("gflop_per_image", "gflop_per_s"):
                assert math.isfinite(row[column]) and row[column] > 0, (row["name"], column)
    assert results["extra"]["cached_features_epoch_speedup_compact_head"] > 0
    printed = capsys.readouterr().out
    assert "| trainer_vs_plain_loop |" in printed and "images/s" in printed


def test_quick_defaults_are_smaller_than_the_full_run():
    quick, full = BenchmarkArguments(quick=True), BenchmarkArguments()
    assert quick.image_size < full.image_size and quick.steps < full.steps and not quick.attribution
    assert full.image_size == 128 and full.infer_image_size == 224 and full.attribution
    report = format_report  # the renderer is exercised by the script test above
    assert callable(report) and callable(run_benchmark)
