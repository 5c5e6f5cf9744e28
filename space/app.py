"""Gradio Space: upload a brain-MRI slice (JPEG, PNG, DICOM, ...) and get P(tumour) with a Grad-CAM heat map."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

__all__ = ["build_demo", "model_id_from_env"]

logger = logging.getLogger(__name__)

# `hf_mri.hub.stage_upload` rewrites these two lines with the pushed model; HF_MRI_MODEL / HF_MRI_REVISION win.
DEFAULT_MODEL = "hf-mri/mri-vgg16"
DEFAULT_REVISION = None
MAX_FILE_MB = 20
MAX_PIXELS = 4096 * 4096
EXAMPLES = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*") if p.is_file())
DISCLAIMER = (
    "⚠️ **Research demo — not for diagnosis.** This model is not a medical device and has not been clinically "
    "validated. Never use its output to make decisions about anyone's health."
)


def model_id_from_env() -> tuple[str, str | None]:
    """The model to serve: env `HF_MRI_MODEL` (a Hub id or a local folder) and `HF_MRI_REVISION`, else defaults."""
    return os.environ.get("HF_MRI_MODEL", DEFAULT_MODEL), os.environ.get("HF_MRI_REVISION") or DEFAULT_REVISION


def build_demo(model_id: str, revision: str | None = None) -> gr.Blocks:
    """Load the model and processor once (Auto classes, remote code) and build the queued Blocks app."""
    processor = AutoImageProcessor.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    processor.max_pixels = min(processor.max_pixels, MAX_PIXELS)
    model = AutoModelForImageClassification.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    model.eval()
    threshold = float(model.config.threshold)
    negative, positive = (model.config.id2label[i] for i in (0, 1))

    def predict(path: str | None):
        if not path:
            message = "Please upload an MRI image (JPEG, PNG, BMP, TIFF or DICOM) or pick an example."
            raise gr.Error(message, print_exception=False)
        name = Path(path).name
        size_mb = os.path.getsize(path) / 2**20
        if size_mb > MAX_FILE_MB:
            message = f"{name} is {size_mb:.1f} MB; please upload a file of at most {MAX_FILE_MB} MB."
            raise gr.Error(message, print_exception=False)
        try:
            gray = processor.prepare_grayscale(path)
        except ValueError as err:  # the processor's MriImageError: not an image, truncated, too small, too large
            raise gr.Error(f"Cannot use this file: {str(err).replace(path, name)}", print_exception=False) from None
        except Exception:  # noqa: BLE001 - never show a stack trace to the user
            logger.exception("Unexpected error while reading %s", path)
            raise gr.Error(f"Cannot use {name}: it could not be read as an MRI image.", print_exception=False) from None
        pixel_values = torch.from_numpy(processor.normalize_grayscale(gray))[None].to(model.dtype)
        heatmaps, logits = model.grad_cam(pixel_values)
        p_tumor = float(torch.sigmoid(logits.float())[0, 0])
        called = positive if p_tumor >= threshold else negative
        verdict = (
            f"### Model output: **{called}**\n"
            f"P({positive}) = {p_tumor:.3f} ({'≥' if p_tumor >= threshold else '<'} threshold {threshold:.2f}). "
            "Research demo — not for diagnosis."
        )
        overlay = processor.overlay_heatmap(gray, heatmaps[0])
        return {positive: p_tumor, negative: 1.0 - p_tumor}, verdict, gray, overlay

    with gr.Blocks(title="Brain-MRI tumour classifier (research demo)") as demo:
        gr.Markdown(
            f"# Brain-MRI tumour classifier\nVGG16 fine-tuned on brain-MRI slices: `{model_id}`.\n\n{DISCLAIMER}"
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label=f"MRI slice: JPEG, PNG, BMP, TIFF or DICOM, up to {MAX_FILE_MB} MB")
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                probabilities = gr.Label(label="Probabilities", num_top_classes=2)
                verdict = gr.Markdown(label="Verdict")
        with gr.Row():
            preview = gr.Image(label="Preprocessed input", type="numpy", format="png", height=320)
            overlay = gr.Image(
                label="Grad-CAM (red = drove the tumour score up)", type="numpy", format="png", height=320
            )
        outputs = [probabilities, verdict, preview, overlay]
        button.click(predict, inputs=upload, outputs=outputs, api_name="predict")
        if EXAMPLES:
            gr.Examples(
                [[p] for p in EXAMPLES],
                inputs=upload,
                outputs=outputs,
                fn=predict,
                run_on_click=True,
                cache_examples=False,
                label="Examples (Kaggle Brain Tumor MRI Dataset, M. Nickparvar)",
            )
        gr.Markdown(f"Decision threshold {threshold:.2f} from the model's config. {DISCLAIMER}")
    demo.queue(default_concurrency_limit=2, max_size=32)
    return demo


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build_demo(*model_id_from_env()).launch(max_file_size=f"{4 * MAX_FILE_MB}mb")
