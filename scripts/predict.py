"""Score MRI files: `python scripts/predict.py --model DIR_OR_HUB_ID scan1.jpg scan2.dcm ...` -> one JSON line each."""

import _script_path  # noqa: F401, I001 - first: keeps scripts/ (and its evaluate.py) off sys.path
import json
import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_mri.inference import load_model, predict_files


@dataclass
class PredictArguments:
    model: str = field(metadata={"help": "Model folder written by scripts/train.py, or a Hub model id."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (commit, tag or branch)."})
    batch_size: int = field(default=16, metadata={"help": "Images per forward pass."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes for decoding."})
    cam_dir: str | None = field(default=None, metadata={"help": "Save a Grad-CAM overlay PNG per file here."})
    backend: str = field(
        default="pytorch", metadata={"help": "'pytorch' or 'onnx' (<model>/model.onnx from scripts/export_onnx.py)."}
    )
    onnx_path: str | None = field(default=None, metadata={"help": "The .onnx file for --backend onnx."})


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per file; return 1 if any file could not be scored, else 0."""
    parser = HfArgumentParser(PredictArguments)
    args, files = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if not files or any(name.startswith("--") for name in files):
        parser.error(f"give image files to score after the flags (unrecognised: {[f for f in files if f[:2] == '--']})")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.backend == "onnx":
        if args.cam_dir:
            parser.error("--cam_dir needs --backend pytorch (Grad-CAM uses gradients)")
        from hf_mri.onnx_export import load_onnx_model

        model, processor = load_onnx_model(args.model, args.onnx_path)
    elif args.backend == "pytorch":
        model, processor = load_model(args.model, args.revision)
    else:
        parser.error(f"--backend must be 'pytorch' or 'onnx', got {args.backend!r}")
    failures = 0
    for row in predict_files(model, processor, files, batch_size=args.batch_size, num_workers=args.num_workers):
        failures += "error" in row
        print(json.dumps(row), flush=True)
    if args.cam_dir:
        from hf_mri.explain import save_overlays

        save_overlays(model, processor, files, args.cam_dir)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
