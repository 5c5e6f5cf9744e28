"""Export a trained model to ONNX: `python scripts/export_onnx.py --model DIR [--output DIR/model.onnx]`."""

import _script_path  # noqa: F401, I001 - first: keeps scripts/ (and its evaluate.py) off sys.path
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_mri.inference import load_model
from hf_mri.onnx_export import OnnxClassifier, export_onnx, max_logit_difference

logger = logging.getLogger("hf_mri")


@dataclass
class ExportArguments:
    model: str = field(metadata={"help": "Model folder written by scripts/train.py, or a Hub model id."})
    output: str | None = field(default=None, metadata={"help": "The .onnx file (default: <model>/model.onnx)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (commit, tag or branch)."})
    opset_version: int | None = field(default=None, metadata={"help": "ONNX opset (default: the exporter's)."})
    tolerance: float = field(default=1e-4, metadata={"help": "Largest allowed |logit| difference vs PyTorch."})


def main(argv: list[str] | None = None) -> int:
    """Export, then check ONNX Runtime against PyTorch on batches of 1 and 3; return 1 if they disagree."""
    (args,) = HfArgumentParser(ExportArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO)
    if args.output is None and not Path(args.model).is_dir():
        raise SystemExit("--output is required when --model is a Hub id")
    output = Path(args.output) if args.output else Path(args.model) / "model.onnx"
    model, _ = load_model(args.model, args.revision)
    export_onnx(model, output, opset_version=args.opset_version)
    onnx_model = OnnxClassifier(output)
    size, channels = model.config.image_size, model.config.num_channels
    generator = torch.Generator().manual_seed(0)
    worst = max(
        max_logit_difference(model, onnx_model, torch.randn(batch, channels, size, size, generator=generator))
        for batch in (1, 3)
    )
    logger.info("ONNX Runtime vs PyTorch: max |logit difference| %.2e (tolerance %.0e)", worst, args.tolerance)
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
