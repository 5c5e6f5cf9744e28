"""Model card, staging and pushing: real numbers in the card, a portable staged folder, no upload without auth."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY, WITHOUT_HF_MRI, load_script, make_mri_folder
from huggingface_hub import HfApi, ModelCard, metadata_load
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor
from hf_mri.hub import HubPushError, push, stage_upload, write_model_card
from hf_mri.reporting import write_evaluation_report

METRIC_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")


def _save_model(folder: Path, **overrides) -> MriVggForImageClassification:
    torch.manual_seed(0)
    model = MriVggForImageClassification(MriVggConfig(**{**TINY, **overrides})).eval()
    model.save_pretrained(folder)
    MriVggImageProcessor(image_size=TINY["image_size"]).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A model folder like train() writes, with metrics computed for real on synthetic scans.
    TODO(lead): switch to a tiny real `train()` run once it is available."""
    root = tmp_path_factory.mktemp("run")
    data = make_mri_folder(root / "mri", n_per_class=6)
    out = root / "out"
    model = _save_model(out, threshold=0.45)
    processor = MriVggImageProcessor(image_size=TINY["image_size"])
    files = sorted(data.rglob("*.png"))
    labels = np.array([0 if f.parent.name == "notumor" else 1 for f in files])
    with torch.no_grad():
        probs = torch.sigmoid(model(**processor(files, return_tensors="pt")).logits)[:, 0].numpy()
    write_evaluation_report(probs, labels, out, prefix="test", threshold=0.45)
    (out / "splits.csv").write_text(
        "path,label,split\n" + "".join(f"{f.name},{y},test\n" for f, y in zip(files, labels))
    )
    report = {
        "data_dir": str(data),
        "layout": "flat",
        "seed": 1234,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "files_found": len(files) + 1,
        "skipped": [{"path": str(data / "notumor" / "broken.jpg"), "reason": "truncated"}],
        "exact_duplicates_removed": 2,
        "exact_duplicate_groups": 1,
        "label_counts": {"test": {"no_tumor": int((labels == 0).sum()), "tumor": int(labels.sum())}},
        "class_counts": {"test": {"glioma": int(labels.sum()), "notumor": int((labels == 0).sum())}},
    }
    (out / "data_report.json").write_text(json.dumps(report))
    hyper = {"data_dir": str(data), "weights": "random", "learning_rate": 1e-4, "seed": 1234, "optim": "adamw_torch"}
    (out / "training_config.json").write_text(json.dumps(hyper))
    torch.save({"not": "uploaded"}, out / "training_args.bin")  # pickles must never be staged
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "optimizer.pt").write_bytes(b"x")
    return out


def test_card_has_the_real_numbers_and_valid_metadata(trained_dir, tmp_path):
    readme = write_model_card(trained_dir, repo_id="me/mri-vgg16", output_path=tmp_path / "README.md")
    results = json.loads((trained_dir / "test_results.json").read_text())
    text = readme.read_text()

    for key in METRIC_KEYS:
        value = results[f"test_{key}"]
        assert (f"| {value:.4f} |" if value is not None else "| n/a |") in text, key
    (tn, fp), (fn, tp) = results["test_confusion_matrix"]
    assert f"{tn} (TN) | {fp} (FP)" in text and f"{fn} (FN) | {tp} (TP)" in text
    assert "![Confusion matrix](confusion_matrix.png)" in text
    for phrase in ("not a medical device", "Out of scope", "seed **1234**", "2 exact duplicates removed",
                   "RANDOM initialisation", "`learning_rate` | 0.0001", "`equalize` | clahe", "Limitations",
                   'repo_id, revision = "me/mri-vgg16", "main"', "trust_remote_code=True"):  # fmt: skip
        assert phrase in text, phrase
    assert str(trained_dir.parent) not in text  # no local paths in a public card

    # Offline validation: the YAML parses strictly, and model-index round-trips through huggingface_hub.
    card = ModelCard.load(readme, ignore_metadata_errors=False)
    meta = metadata_load(readme)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert {"medical-imaging", "brain-mri", "vgg16", "mri"} <= set(meta["tags"]) and meta["license"]
    name, evals = model_index_to_eval_results(meta["model-index"])
    assert name == "mri-vgg16" and card.data.eval_results
    reported = {e.metric_type: e.metric_value for e in evals}
    expected = {k: results[f"test_{k}"] for k in METRIC_KEYS if results[f"test_{k}"] is not None}
    assert reported == expected
    assert {e.dataset_split for e in evals} == {"test"} and {e.task_type for e in evals} == {"image-classification"}


def test_card_without_results_says_not_evaluated(tmp_path):
    _save_model(tmp_path / "bare", weights_source="imagenet:timm/vgg16.tv_in1k")
    text = write_model_card(tmp_path / "bare").read_text()
    assert "**Not evaluated**" in text and "not documented" in text and "RANDOM" not in text
    assert "imagenet:timm/vgg16.tv_in1k" in text
    assert "model-index" not in metadata_load(tmp_path / "bare" / "README.md")


def test_undefined_metric_is_reported_as_na_and_left_out_of_model_index(tmp_path):
    _save_model(tmp_path)
    results = {"test_accuracy": 0.5, "test_roc_auc": None, "test_confusion_matrix": [[0, 0], [2, 2]]}
    (tmp_path / "test_results.json").write_text(json.dumps(results))
    text = write_model_card(tmp_path, repo_id="me/m").read_text()
    assert "| ROC-AUC | n/a |" in text and "| Accuracy | 0.5000 |" in text and "(4 images" in text
    _, evals = model_index_to_eval_results(metadata_load(tmp_path / "README.md")["model-index"])
    assert [(e.metric_type, e.metric_value) for e in evals] == [("accuracy", 0.5)]


@pytest.mark.parametrize("inside", ["model", "model/run", "space/run"])
def test_stage_dir_never_overwrites_the_model_folder(tmp_path, inside):
    _save_model(tmp_path / inside)
    with pytest.raises(ValueError, match="would overwrite the model folder"):
        stage_upload(tmp_path / inside, tmp_path, repo_id="me/m")
    assert (tmp_path / inside / "model.safetensors").is_file()


def test_packaged_template_is_the_repository_template():
    # one source of truth: hf_mri/model_card_template.md links to model_card.md (wheels copy its content)
    assert (REPO_ROOT / "hf_mri" / "model_card_template.md").resolve() == (REPO_ROOT / "model_card.md").resolve()


def test_usage_snippet_in_the_card_runs(trained_dir, tmp_path, monkeypatch):
    text = write_model_card(trained_dir, repo_id="me/mri-vgg16", output_path=tmp_path / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace('"me/mri-vgg16"', repr(str(trained_dir)))
    scan = sorted(trained_dir.parent.rglob("*.png"))[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan.jpg").write_bytes(scan.read_bytes())
    namespace = {}
    exec(compile(snippet, "model_card_snippet", "exec"), namespace)  # noqa: S102 - our own card's code
    assert 0 <= namespace["p_tumor"] <= 1 and namespace["heatmap"].shape == (1, 64, 64)


CHILD = WITHOUT_HF_MRI + textwrap.dedent(
    """
    import numpy as np, torch
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

    folder, image, out = sys.argv[1:4]
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    gray = processor.prepare_grayscale(image)
    pixels = torch.from_numpy(processor.normalize_grayscale(gray))[None]
    with torch.no_grad():
        base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()(pixels).logits
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(pixels).logits
    heatmaps, _ = model.grad_cam(pixels)  # what the Space uses, through remote code only
    overlay = processor.overlay_heatmap(gray, heatmaps[0])
    np.savez(out, base=base.numpy(), logits=logits.numpy(), heatmaps=heatmaps.numpy(), overlay=overlay)
    """
)


@pytest.mark.slow
def test_staged_folder_is_complete_portable_and_pickle_free(trained_dir, tmp_path):
    stage = stage_upload(trained_dir, tmp_path / "stage", repo_id="me/mri-vgg16", space_id="me/mri-demo")
    model_files = sorted(p.name for p in (stage / "model").iterdir())
    assert model_files == sorted(
        ["README.md", "config.json", "preprocessor_config.json", "model.safetensors", "configuration_mri_vgg.py",
         "modeling_mri_vgg.py", "image_processing_mri_vgg.py", "test_results.json", "confusion_matrix.png",
         "roc_curve.png", "splits.csv", "data_report.json", "training_config.json"]
    )  # fmt: skip
    everything = [p for p in stage.rglob("*") if p.is_file()]
    assert not [p for p in everything if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    for path in everything:  # no local absolute paths leak into the public repos
        if path.suffix in (".json", ".md", ".csv", ".py", ".txt"):
            assert str(trained_dir.parent) not in path.read_text(), path
    assert json.loads((stage / "model" / "data_report.json").read_text())["skipped"][0]["path"] == "notumor/broken.jpg"

    space = stage / "space"
    assert {"app.py", "requirements.txt", "README.md", "examples"} <= {p.name for p in space.iterdir()}
    assert metadata_load(space / "README.md")["models"] == ["me/mri-vgg16"]
    assert "DEFAULT_MODEL = 'me/mri-vgg16'" in (space / "app.py").read_text()
    assert "[me/mri-demo](https://huggingface.co/spaces/me/mri-demo)" in (stage / "model" / "README.md").read_text()

    model = MriVggForImageClassification.from_pretrained(trained_dir).eval()
    processor = MriVggImageProcessor.from_pretrained(trained_dir)
    image = sorted(trained_dir.parent.rglob("glioma_*.png"))[0]
    gray = processor.prepare_grayscale(image)
    pixels = torch.from_numpy(processor.normalize_grayscale(gray))[None]
    with torch.no_grad():
        expected = model(pixels).logits.numpy()
    heatmaps, _ = model.grad_cam(pixels)

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    out = tmp_path / "child.npz"
    subprocess.run(
        [sys.executable, "-c", CHILD, str(stage / "model"), str(image), str(out)],
        check=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    child = np.load(out)
    for name in ("base", "logits"):  # AutoModel and AutoModelForImageClassification
        np.testing.assert_allclose(child[name], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(child["heatmaps"], heatmaps.numpy(), rtol=0, atol=1e-5)
    assert child["overlay"].shape == (64, 64, 3) and child["overlay"].dtype == np.uint8


def test_push_script_stage_dir_writes_files_without_network(trained_dir, tmp_path):
    main = load_script("push_to_hub").main
    args = ["--model_dir", str(trained_dir), "--repo_id", "me/mri-vgg16", "--stage_dir", str(tmp_path / "s")]
    assert main(args) == 0
    assert (tmp_path / "s" / "model" / "model.safetensors").is_file() and not (tmp_path / "s" / "space").exists()
    assert main(["--model_dir", str(tmp_path / "nothing"), "--repo_id", "me/x", "--stage_dir", str(tmp_path)]) == 1


class Recorder:
    """Replaces every HfApi method that writes to the Hub; records the calls."""

    WRITES = ("create_repo", "create_commit", "upload_folder", "upload_file", "create_branch", "add_space_variable")

    def __init__(self, monkeypatch, whoami):
        self.calls = []
        self.uploaded = {}
        monkeypatch.setattr(HfApi, "whoami", lambda api, token=None, **kw: whoami(token))
        for name in self.WRITES:
            monkeypatch.setattr(HfApi, name, self._record(name))

    def _record(self, name):
        def method(api, *args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "upload_folder":
                folder = Path(kwargs["folder_path"])
                self.uploaded[kwargs["repo_id"]] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
                return f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"

        return method


def _http_error(status):
    import httpx

    request = httpx.Request("GET", "https://huggingface.co/api/whoami-v2")
    return HfHubHTTPError("Invalid user token.", response=httpx.Response(status, request=request))


def _raise(err):
    def whoami(token):
        raise err

    return whoami


@pytest.mark.parametrize(
    "token, whoami, message",
    [
        (None, None, "No Hugging Face token found"),
        ("hf_bad", _raise(_http_error(401)), "rejected"),
        ("hf_x", _raise(ConnectionError("Name or service not known")), "check your network"),
        ("hf_x", lambda token: {"name": "me", "auth": {"accessToken": {"role": "read"}}}, "read-only"),
    ],
)
def test_push_fails_clearly_before_any_upload(trained_dir, monkeypatch, tmp_path, token, whoami, message):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login either
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "token"))
    recorder = Recorder(monkeypatch, whoami or _raise(AssertionError("whoami must not be called")))
    with pytest.raises(HubPushError, match=message) as info:
        push(trained_dir, "me/mri-vgg16", token=token, space_id="me/mri-demo")
    assert "hf auth login" in str(info.value) or "network" in str(info.value)
    assert "Nothing was uploaded" in str(info.value)
    assert recorder.calls == []


def test_push_in_offline_mode_is_refused_without_network(trained_dir, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    calls = []
    for name in Recorder.WRITES:
        monkeypatch.setattr(HfApi, name, lambda *a, _n=name, **k: calls.append(_n))
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        push(trained_dir, "me/mri-vgg16", token="hf_fake")  # the real whoami: refused locally, no request
    assert calls == []


def test_push_bad_model_dir_uploads_nothing(tmp_path, monkeypatch):
    recorder = Recorder(monkeypatch, lambda token: {"name": "me", "auth": {"accessToken": {"role": "write"}}})
    with pytest.raises(HubPushError, match="missing"):
        push(tmp_path, "me/mri-vgg16", token="hf_x")
    assert recorder.calls == []


def test_push_makes_one_commit_per_repo_and_configures_the_space(trained_dir, monkeypatch):
    recorder = Recorder(monkeypatch, lambda token: {"name": "me", "auth": {"accessToken": {"role": "write"}}})
    urls = push(trained_dir, "mri-vgg16", token="hf_x", space_id="mri-demo", revision="v1", private=True)

    names = [name for name, _, _ in recorder.calls]
    assert names == ["create_repo", "create_branch", "upload_folder", "create_repo", "add_space_variable",
                     "add_space_variable", "upload_folder"]  # fmt: skip
    _, args, kwargs = recorder.calls[0]
    assert args == ("me/mri-vgg16",) and kwargs["exist_ok"] and kwargs["private"]
    assert recorder.calls[2][2]["revision"] == "v1"
    _, args, kwargs = recorder.calls[3]
    assert args == ("me/mri-demo",) and kwargs["repo_type"] == "space" and kwargs["space_sdk"] == "gradio"
    assert recorder.calls[4][1] == ("me/mri-demo", "HF_MRI_MODEL", "me/mri-vgg16")
    assert recorder.calls[5][1] == ("me/mri-demo", "HF_MRI_REVISION", "v1")
    assert "model.safetensors" in recorder.uploaded["me/mri-vgg16"] and "app.py" in recorder.uploaded["me/mri-demo"]
    assert not [f for f in recorder.uploaded["me/mri-vgg16"] if f.endswith((".bin", ".pt"))]
    assert set(urls) == {"model", "space"}
