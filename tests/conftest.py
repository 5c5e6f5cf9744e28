"""Shared fixtures: offline mode, tiny model settings, the bundled sample and the shared real data."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "brain-mri-dev"

# Prepended to child-interpreter scripts: importing hf_mri fails there, as for a Hub user without it.
WITHOUT_HF_MRI = """
import importlib.abc, sys

class BlockHfMri(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_mri" or name.startswith("hf_mri."):
            raise ImportError("hf_mri is blocked in this interpreter")

sys.meta_path.insert(0, BlockHfMri())
"""

# A VGG-shaped model small enough for CPU tests that take seconds.
TINY = {
    "image_size": 64,
    "vgg_layers": [8, "M", 16, "M", 16, "M"],
    "hidden_size": 32,
    "compact_hidden_size": 16,
}


def load_script(name: str):
    """Import scripts/<name>.py under a private module name (scripts/evaluate.py would shadow `evaluate`)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"hf_mri_script_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO_ROOT / "scripts"))  # for `import _script_path`, which takes it off again
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_config():
    from hf_mri import MriVggConfig

    return MriVggConfig(**TINY)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MRI data not present at {SHARED_DATA}")
    return SHARED_DATA


def make_mri_folder(root: Path, n_per_class: int = 12, size: int = 72, seed: int = 0) -> Path:
    """Write `root/notumor/*.png` and `root/glioma/*.png`: textured ellipses, tumours with a bright blob."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for label, folder in ((0, "notumor"), (1, "glioma")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(n_per_class):
            cx, cy = size / 2 + rng.uniform(-4, 4, size=2)
            head = ((xx - cx) / (size * 0.38)) ** 2 + ((yy - cy) / (size * 0.42)) ** 2 < 1
            image = head * rng.integers(40, 140, size=(size, size))
            if label:
                bx, by = rng.uniform(size * 0.35, size * 0.65, size=2)
                image = np.where((xx - bx) ** 2 + (yy - by) ** 2 < (size * 0.1) ** 2, 250, image)
            Image.fromarray(image.astype(np.uint8)).save(root / folder / f"{folder}_{index:03d}.png")
    return root


@pytest.fixture
def mri_folder(tmp_path) -> Path:
    return make_mri_folder(tmp_path / "mri")
