"""Reproducibility: two fresh CPU runs with one seed (and different hash seeds) give the same splits, the same
weights and the same test metrics; another seed gives other splits, so the comparison is not vacuous."""

import json
import subprocess

import pytest
import torch
from conftest import REPO_ROOT, make_mri_folder
from reliability_support import subprocess_env, train_command
from safetensors.torch import load_file

from hf_mri.data import load_splits

RUN_FLAGS = ["--max_steps", "4", "--learning_rate", "1e-3", "--eval_strategy", "no", "--save_strategy", "no",
             "--load_best_model_at_end", "False", "--seed", "7"]  # fmt: skip


@pytest.mark.slow
def test_two_runs_with_one_seed_give_identical_splits_weights_and_test_metrics(tmp_path):
    data = make_mri_folder(tmp_path / "mri", n_per_class=16)
    outs = [tmp_path / "run_a", tmp_path / "run_b"]
    processes = [  # fresh interpreters, different PYTHONHASHSEED: no reliance on set/dict ordering of strings
        subprocess.Popen(train_command(data, out, *RUN_FLAGS), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         env={**subprocess_env(), "PYTHONHASHSEED": str(index), "OMP_NUM_THREADS": "1"})
        for index, out in enumerate(outs)
    ]  # fmt: skip
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    a, b = outs
    assert (a / "splits.csv").read_text() == (b / "splits.csv").read_text()
    results = [json.loads((out / "test_results.json").read_text()) for out in outs]
    assert results[0] == results[1] and results[0]["test_num_samples"] > 0
    losses = [json.loads((out / "all_results.json").read_text())["train_loss"] for out in outs]
    assert losses[0] == losses[1]
    weights = [load_file(out / "model.safetensors") for out in outs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    print(f"\n[repro] identical: splits.csv, test_results.json {results[0]}, {len(weights[0])} weight tensors")


def test_the_seed_decides_the_split(tmp_path):
    data = make_mri_folder(tmp_path / "mri", n_per_class=16)

    def test_paths(seed: int) -> list[str]:
        splits, _ = load_splits(data, seed=seed)
        return sorted(map(str, splits["test"]["path"]))

    assert test_paths(7) == test_paths(7)
    assert test_paths(7) != test_paths(8)
