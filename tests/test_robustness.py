"""Robustness tooling: perturbations as pure image functions, evaluate_robustness keys and CIs, the script's files."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import TINY, load_script, make_mri_folder
from PIL import Image

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor
from hf_mri.data import labelled_files
from hf_mri.inference import predict_files
from hf_mri.metrics import METRIC_NAMES
from hf_mri.perturbations import PERTURBATIONS, adjust_gamma, head_mask, invert, pad_frame
from hf_mri.robustness import evaluate_robustness, read_split, render_markdown, source_of


def _slice(size: int = 80, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    head = ((xx - size / 2) / (size * 0.38)) ** 2 + ((yy - size / 2) / (size * 0.42)) ** 2 < 1
    return Image.fromarray((head * rng.integers(30, 220, (size, size))).astype(np.uint8), mode="L")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    MriVggForImageClassification(MriVggConfig(**TINY, threshold=0.5)).save_pretrained(folder)
    MriVggImageProcessor(image_size=TINY["image_size"]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_and_processor(model_dir):
    model = MriVggForImageClassification.from_pretrained(model_dir).eval()
    return model, MriVggImageProcessor.from_pretrained(model_dir)


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_every_perturbation_gives_a_valid_image_the_processor_accepts(name):
    image = _slice()
    out = PERTURBATIONS[name](image)
    assert isinstance(out, Image.Image) and out.mode == ("RGB" if name == "rgb_gray" else "L")
    assert min(out.size) >= 32
    assert np.asarray(image).tolist() == np.asarray(_slice()).tolist()  # the input is not modified
    pixels = MriVggImageProcessor(image_size=64)(out)["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 64, 64) and torch.isfinite(pixels).all()
    assert PERTURBATIONS[name](np.asarray(image)).size == out.size  # arrays work too


def test_perturbations_do_what_their_names_say():
    image = _slice()
    gray = np.asarray(image).astype(int)
    assert np.array_equal(np.asarray(invert(invert(image))), gray)
    bright, dark = np.asarray(adjust_gamma(image, 0.6)).astype(int), np.asarray(adjust_gamma(image, 1.6)).astype(int)
    assert (bright >= gray).all() and (dark <= gray).all() and bright.mean() > gray.mean() > dark.mean()
    order = np.argsort(gray, axis=None, kind="stable")
    assert (np.diff(bright.ravel()[order]) >= 0).all()  # monotone: the intensity order is kept
    padded = pad_frame(image, fill=0.6)
    assert padded.size == (round(80 / 0.6), round(80 / 0.6)) and np.asarray(padded).sum() == gray.sum()
    assert PERTURBATIONS["resize_0.5x"](image).size == (40, 40) and PERTURBATIONS["resize_2x"](image).size == (160, 160)
    assert PERTURBATIONS["crop_10%"](image).size == (64, 64)
    rgb = np.asarray(PERTURBATIONS["rgb_gray"](image))
    assert rgb.shape == (80, 80, 3) and (rgb == gray[..., None]).all()
    contrast = np.asarray(PERTURBATIONS["contrast_0.6x"](image)).astype(int)
    assert contrast.std() < gray.std() and abs(contrast.mean() - gray.mean()) < 1
    assert np.asarray(PERTURBATIONS["hflip"](image)).tolist() == gray[:, ::-1].tolist()
    jpeg = np.asarray(PERTURBATIONS["jpeg_q30"](image)).astype(int)
    assert jpeg.shape == gray.shape and 0 < np.abs(jpeg - gray).mean() < 40


def test_head_mask_fills_the_head_and_leaves_the_frame():
    gray = np.asarray(pad_frame(_slice(), fill=0.5))
    mask = head_mask(gray)
    assert mask.shape == gray.shape and not mask[:5].any()
    head = np.asarray(pad_frame(Image.fromarray((np.asarray(_slice()) > 0).astype(np.uint8) * 255), fill=0.5)) > 0
    assert (mask & head).sum() / head.sum() > 0.95 and mask.mean() < 0.4


def test_source_of_takes_the_file_name_prefix():
    assert source_of("x/glioma/Tr-glTr_0001.jpg") == "Tr" and source_of("Te-no_7.png") == "Te"
    assert source_of("a/glioma_003.png") == "glioma" and source_of("scan.png") == "(none)"


def test_evaluate_robustness_returns_every_key_with_consistent_numbers(model_and_processor, tmp_path):
    model, processor = model_and_processor
    root = make_mri_folder(tmp_path / "data", n_per_class=8)
    (root / "glioma" / "broken.jpg").write_bytes(b"not an image")
    files, labels = labelled_files(root)
    result = evaluate_robustness(model, processor, files, labels, n_boot=200, tta=True, batch_size=6,
                                 cam_samples=5, output_dir=tmp_path / "out")  # fmt: skip
    keys = {"n", "threshold", "skipped", "metrics", "metrics_tta", "per_class", "per_source", "perturbations"}
    assert keys | {"grad_cam", "n_boot"} == set(result)
    assert result["n"] == 16 and len(result["skipped"]) == 1 and "broken.jpg" in result["skipped"][0]
    for metrics in (result["metrics"], result["metrics_tta"]):
        for name in METRIC_NAMES:
            low, high = metrics[name]["ci"]
            assert low - 1e-9 <= metrics[name]["value"] <= high + 1e-9, name
    per_class = result["per_class"]
    assert set(per_class) == {"glioma", "notumor"} and sum(row["n"] for row in per_class.values()) == result["n"]
    assert per_class["glioma"]["metric"] == "sensitivity" and per_class["notumor"]["metric"] == "specificity"
    assert per_class["glioma"]["value"] == pytest.approx(result["metrics"]["recall"]["value"])
    assert per_class["notumor"]["value"] == pytest.approx(result["metrics"]["specificity"]["value"])
    assert sum(row["n"] for row in result["per_source"].values()) == result["n"]
    assert set(result["perturbations"]) == set(PERTURBATIONS)
    for name, row in result["perturbations"].items():
        assert row["n"] == 16 and 0 <= row["flip_rate"] <= 1 and row["mean_abs_dp"] >= abs(row["mean_dp"]) - 1e-12
        assert row["auc_drop"] == pytest.approx(result["metrics"]["roc_auc"]["value"] - row["roc_auc"]), name
    assert result["perturbations"]["rgb_gray"]["mean_abs_dp"] < 1e-6  # same grey values: same prediction
    cam = result["grad_cam"]
    assert cam["n"] + cam["n_zero_cam"] == 5 and 0 <= cam["mean_inside"] <= 1 and sum(cam["histogram"]) == cam["n"]
    # clean probabilities are those of the ordinary inference path
    rows = [row for row in predict_files(model, processor, files, progress=False) if "p_tumor" in row]
    expected = np.mean([row["p_tumor"] >= 0.5 for row in rows if "glioma" in row["path"]])
    assert per_class["glioma"]["value"] == pytest.approx(expected)
    saved = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert set(saved) == set(result) and "| gamma_0.6 |" in (tmp_path / "out" / "robustness.md").read_text()


def test_script_scores_the_test_split_of_splits_csv_and_writes_both_files(model_dir, tmp_path, capsys):
    root = make_mri_folder(tmp_path / "data", n_per_class=6)
    files, labels = labelled_files(root)
    with open(model_dir / "splits.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for index, (path, label) in enumerate(zip(files, labels)):
            writer.writerow([path.relative_to(root).as_posix(), label, "test" if index % 2 else "train"])
    try:
        assert len(read_split(model_dir / "splits.csv", root, "test")[0]) == 6
        out = tmp_path / "rob"
        result = load_script("robustness").main(["--model", str(model_dir), "--data_dir", str(root), "--output_dir",
                                                  str(out), "--n_boot", "50", "--cam_samples", "2"])  # fmt: skip
    finally:
        (model_dir / "splits.csv").unlink()
    assert result["n"] == 6 and result["metrics_tta"] is None
    assert json.loads((out / "robustness.json").read_text())["n"] == 6
    markdown = (out / "robustness.md").read_text()
    assert markdown == render_markdown(result) and markdown.strip() in capsys.readouterr().out
    # without splits.csv the whole folder is scored, into <model>/robustness by default
    result = load_script("robustness").main(["--model", str(model_dir), "--data_dir", str(root), "--n_boot", "20",
                                             "--cam_samples", "0", "--tta"])  # fmt: skip
    assert result["n"] == 12 and result["grad_cam"] is None and result["metrics_tta"] is not None
    assert (model_dir / "robustness" / "robustness.md").is_file()
