"""A saved model folder loads through the Auto classes in an interpreter that cannot import hf_mri."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from conftest import TINY, WITHOUT_HF_MRI
from PIL import Image

from hf_mri import MriVggConfig, MriVggForImageClassification, MriVggImageProcessor

CHILD = WITHOUT_HF_MRI + textwrap.dedent(
    """
    import numpy as np, torch
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

    folder, image, out = sys.argv[1:4]
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixels = processor([image], return_tensors="pt")["pixel_values"]
    results = {}
    for auto in (AutoModel, AutoModelForImageClassification):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            results[auto.__name__] = model(pixels).logits.numpy()
        results[auto.__name__ + "_frozen"] = np.array([not p.requires_grad for p in model.parameters()])
    np.savez(out, pixels=pixels.numpy(), **results)
    """
)


def test_saved_folder_loads_without_hf_mri_and_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = MriVggForImageClassification(MriVggConfig(**TINY, freeze_blocks=1, threshold=0.3)).eval()
    processor = MriVggImageProcessor(image_size=TINY["image_size"], equalize="global")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    files = sorted(os.listdir(folder))
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_mri_vgg.py",
        "modeling_mri_vgg.py",
        "image_processing_mri_vgg.py",
    } <= set(files)
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}
    assert config["threshold"] == 0.3
    assert "AutoImageProcessor" in json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]

    image = tmp_path / "scan.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120), dtype=np.uint8)).save(image)
    pixels = processor([image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixels).logits.numpy()

    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "",
    }
    out = tmp_path / "child.npz"
    subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(image), str(out)],
        check=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    child = np.load(out)
    np.testing.assert_array_equal(child["pixels"], pixels.numpy())
    frozen = np.array([not p.requires_grad for p in model.parameters()])
    for name in ("AutoModel", "AutoModelForImageClassification"):
        # Same weights and inputs bit for bit; oneDNN may order float sums differently in another process.
        np.testing.assert_allclose(child[name], expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(child[name + "_frozen"], frozen)
