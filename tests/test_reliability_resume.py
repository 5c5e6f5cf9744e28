"""Crash and resume: a run killed with SIGKILL resumes from its last complete checkpoint and ends at max_steps;
incomplete checkpoints are skipped; an existing output folder is never touched; an unwritable one fails at once."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT
from reliability_support import subprocess_env, train_command
from test_training import EXPECTED_FILES, run_train

from hf_mri import training

MAX_STEPS = 12
CHECKPOINT_FLAGS = ["--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no",
                    "--load_best_model_at_end", "False", "--save_total_limit", "3"]  # fmt: skip


def _steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


def _write_checkpoint(folder: Path, step: int) -> Path:
    """A minimal complete checkpoint: trainer_state.json and a valid model.safetensors."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(64)}, folder / "model.safetensors")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


INCOMPLETE = {
    "no trainer_state": (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json"),
    "torn trainer_state": (lambda f: (f / "trainer_state.json").write_text('{"global_st'), "unreadable trainer_state"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors"),
    "torn weights": (lambda f: _truncate(f / "model.safetensors"), "truncated or corrupt"),
    "empty weights": (lambda f: (f / "model.safetensors").write_bytes(b""), "truncated or corrupt"),
}


@pytest.mark.parametrize("case", sorted(INCOMPLETE))
def test_resume_last_skips_an_incomplete_newer_checkpoint(tmp_path, caplog, case):
    damage, reason = INCOMPLETE[case]
    _write_checkpoint(tmp_path / "checkpoint-2", 2)
    damage(_write_checkpoint(tmp_path / "checkpoint-10", 10))  # numeric, not lexical, order: 10 > 2
    assert reason in training.checkpoint_problem(tmp_path / "checkpoint-10")
    args = SimpleNamespace(resume_from_checkpoint="last", output_dir=str(tmp_path))
    with caplog.at_level("WARNING", logger="hf_mri.training"):
        assert training.resolve_resume(args) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-10" in caplog.text and reason in caplog.text
    # named explicitly, an incomplete checkpoint is refused with the reason instead of crashing the Trainer later
    with pytest.raises(FileNotFoundError, match=f"incomplete: .*{reason}"):
        training.resolve_resume(SimpleNamespace(resume_from_checkpoint=str(tmp_path / "checkpoint-10")))
    shutil.rmtree(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint.*checkpoint-10"):
        training.resolve_resume(args)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_last_finishes_at_max_steps(mri_folder, tmp_path):
    out, env = tmp_path / "run", subprocess_env()
    command = train_command(mri_folder, out, "--max_steps", str(MAX_STEPS), *CHECKPOINT_FLAGS)
    with open(tmp_path / "first.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and max(_steps(out), default=0) >= 3:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = max(_steps(out))
    assert killed_at < MAX_STEPS and not (out / "model.safetensors").exists()
    complete = [step for step in _steps(out) if training.checkpoint_problem(out / f"checkpoint-{step}") is None]
    # Also leave a checkpoint torn mid-save, as a kill during `_save_checkpoint` would: resume must skip it.
    torn = out / f"checkpoint-{killed_at + 1}"
    shutil.copytree(out / f"checkpoint-{max(complete)}", torn)
    (torn / "trainer_state.json").unlink()
    _truncate(torn / "model.safetensors")

    resumed = subprocess.run(
        [*command, "--resume_from_checkpoint", "last"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Not resuming from {torn.name}" in resumed.stderr
    print(f"\n[resume] killed at checkpoint-{killed_at}; complete {complete}; resumed from checkpoint-{max(complete)}")
    state = json.loads((out / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS == state["max_steps"]
    # one loss per step 1..MAX_STEPS: the resumed run continued from the checkpoint, no step lost or repeated
    assert [row["step"] for row in state["log_history"] if "loss" in row] == list(range(1, MAX_STEPS + 1))
    for name in EXPECTED_FILES:
        assert (out / name).is_file(), f"{name} missing after resume"
    assert json.loads((out / "all_results.json").read_text())["train_loss"] > 0


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if data loading or model building starts."""

    def started(*args, **kwargs):
        raise AssertionError("data loading / model building started before the output folder was checked")

    monkeypatch.setattr(training, "load_splits", started)
    monkeypatch.setattr(training, "build_model", started)


def test_non_empty_output_dir_is_left_exactly_as_it_was(mri_folder, tmp_path, no_training):
    out = tmp_path / "taken"
    (out / "checkpoint-7").mkdir(parents=True)
    (out / "checkpoint-7" / "model.safetensors").write_bytes(b"old weights")
    (out / "config.json").write_text('{"old": true}')
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match="nothing was overwritten.*--overwrite_output_dir"):
        run_train(mri_folder, out, "--max_steps", "1")
    assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["checkpoint-7", "config.json"]


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("a file, not a folder")
    return tmp_path / "afile" / "out"


def _is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("a file, not a folder")
    return tmp_path / "afile"


def _in_proc(tmp_path: Path) -> Path:
    return Path("/proc/hf_mri_reliability/out")  # not even root can create folders in /proc


@pytest.mark.parametrize("make_output_dir", [_under_a_file, _is_a_file, _in_proc])
def test_unwritable_output_dir_fails_before_any_training(mri_folder, tmp_path, no_training, make_output_dir):
    out = make_output_dir(tmp_path)
    started = time.monotonic()
    with pytest.raises(PermissionError, match=f"output_dir {out} is not writable.*choose another --output_dir"):
        run_train(mri_folder, out, "--max_steps", "1")
    assert time.monotonic() - started < 10
