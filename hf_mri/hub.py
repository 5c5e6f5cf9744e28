"""Stage and push a trained model folder and its Gradio Space to the Hugging Face Hub."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, SpaceCard, get_token
from huggingface_hub.errors import LocalTokenNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from .model_card import read_json, scrub_paths, write_model_card

__all__ = ["HubPushError", "push", "stage_upload", "write_model_card"]

logger = logging.getLogger(__name__)


PACKAGE_DIR = Path(__file__).resolve().parent
SPACE_SOURCE = PACKAGE_DIR.parent / "space"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
MODEL_VARIABLE = "HF_MRI_MODEL"
REVISION_VARIABLE = "HF_MRI_REVISION"
# What goes to the Hub: weights as safetensors, configs, the portable code, the card, results and plots.
MODEL_PATTERNS = (
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "*.py",
    "*_results.json",
    "training_config.json",
    "data_report.json",
    "splits.csv",
    "*.png",
)
SCRUBBED = ("data_report.json", "training_config.json")
WHOAMI_TIMEOUT_S = 8.0  # the credential check before a push; a reachable Hub answers in well under a second
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class HubPushError(RuntimeError):
    """Pushing to the Hub cannot start or failed; the message says why and what to do."""


def _stage_space(space_dir: Path, repo_id: str, revision: str | None, source: Path) -> None:
    missing = [name for name in SPACE_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: Space sources missing {missing}; stage from a checkout of the project")
    space_dir.mkdir(parents=True)
    app = (source / "app.py").read_text(encoding="utf-8")
    app, n_model = re.subn(r"^DEFAULT_MODEL = .*$", f"DEFAULT_MODEL = {repo_id!r}", app, count=1, flags=re.M)
    app, n_rev = re.subn(r"^DEFAULT_REVISION = .*$", f"DEFAULT_REVISION = {revision!r}", app, count=1, flags=re.M)
    if not (n_model and n_rev):
        raise RuntimeError(f"{source / 'app.py'}: DEFAULT_MODEL / DEFAULT_REVISION lines not found")
    (space_dir / "app.py").write_text(app, encoding="utf-8")
    shutil.copy2(source / "requirements.txt", space_dir / "requirements.txt")
    card = SpaceCard.load(source / "README.md")
    card.data.models = [repo_id]
    card.save(space_dir / "README.md")
    if (source / "examples").is_dir():
        shutil.copytree(source / "examples", space_dir / "examples")


def stage_upload(
    model_dir: str | os.PathLike,
    stage_dir: str | os.PathLike,
    *,
    repo_id: str,
    space_id: str | None = None,
    revision: str | None = None,
    space_source: str | os.PathLike | None = None,
) -> Path:
    """Write exactly what `push` uploads, without network: `stage_dir/model/` and, with `space_id`,
    `stage_dir/space/` (app defaulting to `repo_id`, README `models: [repo_id]`). Returns `stage_dir`."""
    model_dir, stage_dir = Path(model_dir), Path(stage_dir)
    validate_repo_id(repo_id)
    if space_id:
        validate_repo_id(space_id)
    required = ["config.json", "preprocessor_config.json"]
    required += [] if list(model_dir.glob("model*.safetensors")) else ["model.safetensors"]
    code = {
        ref.split(".")[0] + ".py"
        for key in ("config.json", "preprocessor_config.json")
        for ref in read_json(model_dir / key).get("auto_map", {}).values()
    }
    missing = [name for name in required + sorted(code) if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{model_dir}: missing {missing}; pass the output_dir written by scripts/train.py (save_pretrained)"
        )
    for sub in ("model", "space"):  # replaced on every run, so never let them contain the model folder
        if (stage_dir / sub).resolve() in (model_dir.resolve(), *model_dir.resolve().parents):
            raise ValueError(f"stage_dir {stage_dir} would overwrite the model folder {model_dir}: pick another one")
        if (stage_dir / sub).exists():
            shutil.rmtree(stage_dir / sub)
    target = stage_dir / "model"
    target.mkdir(parents=True)
    names = sorted({p.name for pattern in MODEL_PATTERNS for p in model_dir.glob(pattern) if p.is_file()})
    data_dir = read_json(model_dir / "data_report.json").get("data_dir")
    for name in names:
        content = read_json(model_dir / name) if name in SCRUBBED or name.endswith("_results.json") else None
        if content:  # results and reports: no local absolute paths on the Hub
            (target / name).write_text(json.dumps(scrub_paths(content, data_dir), indent=2) + "\n", encoding="utf-8")
        else:
            shutil.copy2(model_dir / name, target / name)
    write_model_card(model_dir, repo_id=repo_id, revision=revision, space_id=space_id, output_path=target / "README.md")
    if space_id:
        _stage_space(stage_dir / "space", repo_id, revision, Path(space_source) if space_source else SPACE_SOURCE)
    pickles = [str(p) for p in stage_dir.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise HubPushError(f"refusing to upload pickle files {pickles}; save weights as safetensors")
    logger.info("Staged %d model files in %s", len(names) + 1, target)
    return stage_dir


def _whoami_within(api: HfApi, token: str | None, seconds: float = WHOAMI_TIMEOUT_S) -> dict[str, Any]:
    """`api.whoami`, but give up after `seconds`: the Hub client has no timeout, so a network that drops
    packets would otherwise hang here for minutes. The call goes on in a daemon thread that exit does not wait for."""
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["info"] = api.whoami(token=token)
        except Exception as err:  # noqa: BLE001 - re-raised below, in the caller's thread
            result["error"] = err

    thread = threading.Thread(target=call, name="hf_mri-whoami", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"the Hub ({api.endpoint}) did not answer within {seconds:.0f} s")
    if "error" in result:
        raise result["error"]
    return result["info"]


def _check_credentials(api: HfApi, token: str | None) -> dict[str, Any]:
    """`whoami` before anything else: a clear error for no token, a bad token, offline mode or no network."""
    fix = "Run `hf auth login`, or set HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens)"
    try:
        if not (token or get_token()):
            raise LocalTokenNotFoundError("no token given, none in HF_TOKEN and no stored login")
        info = _whoami_within(api, token)
    except Exception as err:  # noqa: BLE001 - any failure here means we cannot push: say why, upload nothing
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(err, LocalTokenNotFoundError):
            hint = f"No Hugging Face token found. {fix}"
        elif status == 401:
            hint = f"The token was rejected (401 Unauthorized). {fix}"
        elif isinstance(err, OfflineModeIsEnabled):
            hint = "Offline mode is on (HF_HUB_OFFLINE=1): unset it, or use --stage_dir to only write the files"
        else:
            hint = f"Cannot reach the Hub: check your network / proxy / HF_ENDPOINT, and your token. {fix}"
        raise HubPushError(f"{hint}. ({type(err).__name__}: {err}) Nothing was uploaded.") from err
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubPushError(f"The token of {info.get('name')} is read-only. {fix}. Nothing was uploaded.")
    return info


def push(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload brain-MRI VGG16 classifier (hf_mri)",
    space_id: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Push the model folder (one commit) and optionally its Gradio Space (one commit) to the Hub.

    Credentials, repo ids and every file are checked first; nothing is uploaded if any check fails.
    `repo_id`/`space_id` without a namespace go to the logged-in user's. Returns the commit URLs.
    """
    api = HfApi(token=token)
    user = _check_credentials(api, token)
    repo_id = repo_id if "/" in repo_id else f"{user['name']}/{repo_id}"
    if space_id and "/" not in space_id:
        space_id = f"{user['name']}/{space_id}"
    with tempfile.TemporaryDirectory(prefix="hf_mri_push_") as tmp:
        try:
            staged = stage_upload(model_dir, tmp, repo_id=repo_id, space_id=space_id, revision=revision)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            raise HubPushError(f"{err}. Nothing was uploaded.") from err
        urls = {}
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=staged / "model", revision=revision, commit_message=commit_message
            )
            urls["model"] = str(getattr(commit, "commit_url", commit))
            logger.info("Pushed model to https://huggingface.co/%s (%s)", repo_id, urls["model"])
            if space_id:
                variables = [{"key": MODEL_VARIABLE, "value": repo_id}]
                variables += [{"key": REVISION_VARIABLE, "value": revision}] if revision else []
                api.create_repo(
                    space_id,
                    repo_type="space",
                    space_sdk="gradio",
                    private=private,
                    exist_ok=True,
                    space_variables=variables,
                )
                for variable in variables:  # create_repo ignores them for an existing Space
                    api.add_space_variable(space_id, variable["key"], variable["value"])
                if private:
                    logger.warning("Private model: add an HF_TOKEN secret with read access to Space %s", space_id)
                commit = api.upload_folder(
                    repo_id=space_id, repo_type="space", folder_path=staged / "space", commit_message=commit_message
                )
                urls["space"] = str(getattr(commit, "commit_url", commit))
                logger.info("Pushed Space to https://huggingface.co/spaces/%s", space_id)
        except Exception as err:
            done = f" (already pushed: {urls})" if urls else " Nothing was uploaded."
            raise HubPushError(f"Push to the Hub failed ({type(err).__name__}: {err}).{done}") from err
    return urls
