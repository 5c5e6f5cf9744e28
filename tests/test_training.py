"""End-to-end training on a synthetic folder with a tiny VGG: files written, metrics consistent, resume, threshold."""

import json

import numpy as np
import pytest
from conftest import TINY, load_script

TINY_FLAGS = [
    "--weights", "random", "--image_size", str(TINY["image_size"]), "--vgg_layers", json.dumps(TINY["vgg_layers"]),
    "--hidden_size", str(TINY["hidden_size"]), "--compact_hidden_size", str(TINY["compact_hidden_size"]),
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--use_cpu",
    "--logging_steps", "1", "--dataloader_num_workers", "0", "--report_to", "none", "--seed", "0",
]  # fmt: skip

EXPECTED_FILES = [
    "config.json", "model.safetensors", "preprocessor_config.json", "configuration_mri_vgg.py",
    "modeling_mri_vgg.py", "image_processing_mri_vgg.py", "README.md", "test_results.json", "all_results.json",
    "confusion_matrix.png", "roc_curve.png", "splits.csv", "data_report.json", "training_config.json",
]  # fmt: skip


def run_train(data_dir, output_dir, *extra):
    train_script = load_script("train")

    argv = ["--data_dir", str(data_dir), "--output_dir", str(output_dir), *TINY_FLAGS, *extra]
    return train_script.main(argv)


def test_short_run_writes_the_whole_model_folder(mri_folder, tmp_path):
    out = tmp_path / "run"
    results = run_train(mri_folder, out, "--max_steps", "3", "--eval_strategy", "steps", "--eval_steps", "2",
                        "--save_strategy", "steps", "--save_steps", "2")  # fmt: skip
    for name in EXPECTED_FILES:
        assert (out / name).is_file(), f"{name} missing"
    test = json.loads((out / "test_results.json").read_text())
    (tn, fp), (fn, tp) = test["test_confusion_matrix"]
    n = tn + fp + fn + tp
    assert n == sum(1 for line in (out / "splits.csv").read_text().splitlines() if line.endswith(",test"))
    assert test["test_accuracy"] == pytest.approx((tn + tp) / n)
    assert test["test_recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
    assert test["test_specificity"] == pytest.approx(tn / (tn + fp) if tn + fp else 0.0)
    all_results = json.loads((out / "all_results.json").read_text())
    assert all_results["world_size"] == 1 and "eval_roc_auc" in all_results
    assert results["test_accuracy"] == test["test_accuracy"]
    card = (out / "README.md").read_text()
    assert f"{test['test_accuracy']:.3f}" in card


def test_refuses_to_overwrite_a_non_empty_output_dir(mri_folder, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        run_train(mri_folder, out, "--max_steps", "1")
    assert (out / "precious.txt").read_text() == "keep me"


def test_resume_continues_at_the_saved_step_with_the_same_optimizer_state(mri_folder, tmp_path):
    import torch

    out = tmp_path / "resume"
    run_train(mri_folder, out, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
              "--eval_strategy", "no", "--load_best_model_at_end", "False")  # fmt: skip
    checkpoint = out / "checkpoint-2"
    saved_optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    results = run_train(mri_folder, out, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
                        "--eval_strategy", "no", "--load_best_model_at_end", "False",
                        "--resume_from_checkpoint", "last")  # fmt: skip
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and results["epoch"] > 0
    # the first resumed step started from the saved Adam moments: step counters continued from 2
    resumed = torch.load(out / "checkpoint-4" / "optimizer.pt", weights_only=True)
    steps = {int(s["step"]) for s in resumed["state"].values()}
    assert steps == {4} and {int(s["step"]) for s in saved_optimizer["state"].values()} == {2}


def test_target_sensitivity_sets_a_threshold_reaching_it_on_validation(mri_folder, tmp_path):
    out = tmp_path / "sens"
    results = run_train(mri_folder, out, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
                        "--load_best_model_at_end", "False", "--target_sensitivity", "0.9")  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["threshold"] == results["threshold"]
    assert results["eval_recall"] >= 0.9
    assert np.isfinite(results["test_accuracy"])


@pytest.mark.parametrize("extra", [["--freeze_blocks", "3", "--cache_features"], ["--bf16", "--channels_last"]])
def test_fast_paths_train_end_to_end(mri_folder, tmp_path, extra):
    out = tmp_path / "fast"
    results = run_train(mri_folder, out, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
                        "--load_best_model_at_end", "False", *extra)  # fmt: skip
    assert (out / "model.safetensors").is_file() and np.isfinite(results["train_loss"])
    assert sum(map(sum, json.loads((out / "test_results.json").read_text())["test_confusion_matrix"])) > 0
