"""Two real gloo DDP processes on the CPU through `accelerate launch`; a mis-launch is refused."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, TINY, make_mri_folder

FLAGS = [
    "--weights", "random", "--image_size", str(TINY["image_size"]), "--vgg_layers", json.dumps(TINY["vgg_layers"]),
    "--hidden_size", str(TINY["hidden_size"]), "--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no",
    "--load_best_model_at_end", "False", "--per_device_eval_batch_size", "4", "--report_to", "none",
]  # fmt: skip


def launch(extra, data_dir, out, port):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", str(port), str(REPO_ROOT / "scripts" / "train.py"),
               "--data_dir", str(data_dir), "--output_dir", str(out), *FLAGS, *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


@pytest.mark.slow
def test_two_cpu_processes_train_together_and_count_every_test_example_once(tmp_path):
    data = make_mri_folder(tmp_path / "data", n_per_class=17)  # 34 images -> 5 test: uneven across 2 ranks
    out = tmp_path / "out"
    result = launch(["--use_cpu"], data, out, 29611)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "all_results.json").read_text())["world_size"] == 2
    test = json.loads((out / "test_results.json").read_text())
    n_test = sum(1 for line in (out / "splits.csv").read_text().splitlines() if line.endswith(",test"))
    assert n_test == 5 and sum(map(sum, test["test_confusion_matrix"])) == n_test == test["test_num_samples"]


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="with GPUs --multi_gpu is a real DDP run")
def test_two_processes_that_are_not_one_run_are_refused(tmp_path):
    data = make_mri_folder(tmp_path / "data", n_per_class=6)
    result = launch([], data, tmp_path / "out", 29612)  # no --use_cpu on a CPU-only machine
    assert result.returncode != 0
    assert "--use_cpu" in result.stderr and "world size of 1" in result.stderr
