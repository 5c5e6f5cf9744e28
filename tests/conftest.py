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

# A VGG-shaped model small enough for CPU tests that take seconds.
TINY = {
    "image_size": 64,
    "vgg_layers": [8, "M", 16, "M", 16, "M"],
    "hidden_size": 32,
    "compact_hidden_size": 16,
}


@pytest.fixture
def tiny_config():
    from hf_mri import MriVggConfig

    return MriVggConfig(**TINY)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MRI data not present at {SHARED_DATA}")
    return SHARED_DATA
