"""Unsafe weights: training writes safetensors only; .pth files are read with weights_only=True; a pickle that
would run code is refused with a clear error and its code never runs (a live payload would create a marker file)."""

import contextlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY
from test_space import save_tiny_model
from test_training import run_train

from hf_mri import MriVggConfig, MriVggForImageClassification, WeightsError
from hf_mri.hub import PICKLE_SUFFIXES, stage_upload
from hf_mri.inference import load_model


class _Payload:
    """Unpickling this runs `open(marker, "w")`: proof of code execution if the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def _tiny_features() -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict for the TINY conv stack (features.* keys, as in torchvision's VGG)."""
    model = MriVggForImageClassification(MriVggConfig(**TINY, head="compact"))
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("features.")}


def test_training_writes_only_safetensors_and_the_hub_upload_has_no_pickles(mri_folder, tmp_path):
    out = tmp_path / "run"
    run_train(mri_folder, out, "--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
              "--eval_strategy", "no", "--load_best_model_at_end", "False")  # fmt: skip
    top_level = sorted(p.name for p in out.iterdir() if p.is_file())
    assert "model.safetensors" in top_level
    assert [name for name in top_level if name.endswith(PICKLE_SUFFIXES)] == []
    assert any(p.suffix in PICKLE_SUFFIXES for p in (out / "checkpoint-1").iterdir())  # Trainer state, not uploaded
    staged = stage_upload(out, tmp_path / "stage", repo_id="me/mri")
    assert [p for p in staged.rglob("*") if p.name.endswith(PICKLE_SUFFIXES)] == []


def test_torchvision_pth_is_read_with_weights_only(tmp_path, monkeypatch):
    path, source = tmp_path / "vgg16.pth", _tiny_features()
    torch.save(source, path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = MriVggForImageClassification.from_vgg16(path, **TINY, head="compact")
    assert calls == [True] and model.config.weights_source == "file:vgg16.pth"
    torch.testing.assert_close(model.features[0].weight, source["features.0.weight"], rtol=0, atol=0)


def _torch_pickle(path: Path, marker: Path) -> None:
    torch.save({"features.0.weight": _Payload(marker)}, path)


def _plain_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"features.0.weight": _Payload(marker)}, protocol=2))


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("evil.pth", _torch_pickle, "refused to load.*weights_only=True.*Convert it to .safetensors"),
        ("evil_plain.pth", _plain_pickle, "refused to load.*weights_only=True"),
        ("evil.safetensors", _torch_pickle, "not a readable safetensors file"),
    ],
)
def test_weights_file_with_code_is_refused_and_never_run(tmp_path, name, write, message):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    write(path, marker)
    with pytest.raises(WeightsError, match=message):
        MriVggForImageClassification.from_vgg16(path, **TINY)
    assert not marker.exists(), "the pickle's code ran"
    if path.suffix == ".pth":  # control: the payload is live, an unsafe loader would have run it
        with contextlib.suppress(RuntimeError):  # a plain pickle runs, then fails torch's magic-number check
            torch.load(path, weights_only=False)
        assert marker.read_text() == "pwned"


@pytest.mark.parametrize("keep_safetensors", [False, True])
def test_model_folder_with_an_evil_pytorch_model_bin_never_runs_it(tmp_path, keep_safetensors):
    folder, marker = tmp_path / "model", tmp_path / "pwned"
    save_tiny_model(folder)
    _torch_pickle(folder / "pytorch_model.bin", marker)
    if keep_safetensors:  # safetensors wins: the .bin is never opened and the model loads
        model, _ = load_model(folder)
        assert model.config.image_size == TINY["image_size"]
    else:
        os.remove(folder / "model.safetensors")
        with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported global"):
            load_model(folder)
    assert not marker.exists(), "the pickle's code ran"
    shutil.rmtree(folder)
