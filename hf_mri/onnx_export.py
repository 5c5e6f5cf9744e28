"""ONNX export of the classifier (dynamic batch) and an ONNX Runtime model that `predict_files` can drive."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

__all__ = ["OnnxClassifier", "export_onnx", "load_onnx_model", "max_logit_difference"]

logger = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
CONFIG_KEY = "hf_mri_config"  # ONNX metadata entry holding the model's config.json, so a .onnx file stands alone
SINGLE_FILE_LIMIT = 1_800_000_000  # bytes of weights; protobuf caps one file at 2 GiB, larger ones go external


class _LogitsOnly(nn.Module):
    """`pixel_values -> logits`: the exportable core of `MriVggForImageClassification`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits


def export_onnx(model: nn.Module, path: str | os.PathLike, opset_version: int | None = None) -> Path:
    """Export `model` (eval mode, fp32) to `path` with the torch.export-based exporter (`dynamo=True`).

    The graph has one input `pixel_values` (batch, C, S, S) with a dynamic batch axis and S = `config.image_size`,
    and one output `logits` (batch, 1). The config (threshold, id2label, ...) goes into the file's metadata.
    Weights above ~1.8 GB would be written next to it as `<path>.data`; VGG16 (0.54 GB) stays one file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    size, channels = int(config.image_size), int(config.num_channels)
    was_training = model.training
    model.eval()
    parameter = next(model.parameters())
    example = torch.zeros(2, channels, size, size, dtype=torch.float32, device=parameter.device)
    batch = torch.export.Dim("batch", min=1)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > SINGLE_FILE_LIMIT
    chatter = io.StringIO()  # the exporter prints progress lines; keep them for debug logging only
    try:
        with contextlib.redirect_stdout(chatter):
            program = torch.onnx.export(
                _LogitsOnly(model).eval(),
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset_version,
                dynamo=True,
                external_data=external,
                verbose=False,
            )
    finally:
        model.train(was_training)
        logger.debug("torch.onnx.export: %s", chatter.getvalue())
    program.model.metadata_props[CONFIG_KEY] = config.to_json_string(use_diff=False)
    program.save(path, external_data=external)
    logger.info("Exported ONNX model to %s (%.1f MB of weights, batch axis dynamic)", path, weight_bytes / 1e6)
    return path


class OnnxClassifier:
    """An ONNX Runtime session with the call interface of `MriVggForImageClassification` used for inference:
    `model(pixel_values).logits` (a CPU torch tensor (B, 1)), `model.config`, `model.device`, `model.parameters()`
    and `model.eval()`, so `hf_mri.inference.predict_files` runs it unchanged.

    Args:
        path: the `.onnx` file written by `export_onnx`.
        config (`MriVggConfig`, *optional*): defaults to the config stored in the file's metadata.
        num_threads (`int`, *optional*): intra-op threads (default: ONNX Runtime's choice, one per core).
        providers (`list[str]`, *optional*): execution providers (default: the local ones this onnxruntime
            offers, in its order of preference, e.g. CUDA then CPU).
    """

    device = torch.device("cpu")  # inputs are handed over as CPU numpy arrays

    def __init__(
        self,
        path: str | os.PathLike,
        config: Any | None = None,
        num_threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no ONNX file; write one with scripts/export_onnx.py --model DIR")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        local = [name for name in ort.get_available_providers() if name != "AzureExecutionProvider"]  # remote-only
        self.session = ort.InferenceSession(str(self.path), options, providers=providers or local)
        self.config = config if config is not None else self._stored_config()
        shape = self.session.get_inputs()[0].shape
        self.input_shape = tuple(dim if isinstance(dim, int) else None for dim in shape)

    def _stored_config(self) -> Any:
        from .configuration_mri_vgg import MriVggConfig

        stored = self.session.get_modelmeta().custom_metadata_map.get(CONFIG_KEY)
        if stored is None:
            raise ValueError(f"{self.path}: no {CONFIG_KEY!r} metadata; pass config=MriVggConfig.from_pretrained(DIR)")
        return MriVggConfig.from_dict(json.loads(stored))

    def __call__(self, pixel_values: torch.Tensor | np.ndarray, **kwargs: Any) -> ImageClassifierOutput:
        """Logits (B, 1) for a float batch (B, C, S, S) whose C, S match the exported graph."""
        array = pixel_values.detach().cpu().float().numpy() if torch.is_tensor(pixel_values) else pixel_values
        array = np.ascontiguousarray(array, dtype=np.float32)
        expected = self.input_shape[1:]
        if array.ndim != 4 or any(want is not None and want != got for want, got in zip(expected, array.shape[1:])):
            raise ValueError(
                f"{self.path}: expects pixel_values of shape (batch, {', '.join(map(str, expected))}), got "
                f"{tuple(array.shape)}; preprocess with the model's image processor (image_size={expected[-1]})"
            )
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return ImageClassifierOutput(logits=torch.from_numpy(logits))

    forward = __call__

    def parameters(self) -> Iterator[torch.Tensor]:
        """One empty CPU tensor, for code that finds the device with `next(model.parameters()).device`."""
        yield torch.empty(0)

    def eval(self) -> OnnxClassifier:
        return self

    def __repr__(self) -> str:
        return f"OnnxClassifier({str(self.path)!r}, providers={self.session.get_providers()})"


def load_onnx_model(model_dir: str | os.PathLike, onnx_path: str | os.PathLike | None = None, **kwargs: Any):
    """`(OnnxClassifier, image processor)` for a model folder: `<model_dir>/model.onnx` unless `onnx_path` is
    given; the processor (and config) come from the folder, as `inference.load_model` would load them."""
    from transformers import AutoConfig, AutoImageProcessor

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    path = Path(onnx_path) if onnx_path is not None else Path(model_dir) / "model.onnx"
    return OnnxClassifier(path, config=config, **kwargs), processor


def max_logit_difference(model: nn.Module, onnx_model: OnnxClassifier, pixel_values: torch.Tensor) -> float:
    """Largest absolute logit difference between PyTorch (eval, fp32) and ONNX Runtime on one batch."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            reference = model(pixel_values.to(next(model.parameters()).device)).logits.float().cpu()
    finally:
        model.train(was_training)
    return float((onnx_model(pixel_values).logits - reference).abs().max())
