"""Evaluate a model on a whole labelled folder: `python scripts/evaluate.py --model M --data_dir D --output_dir O`."""

import _script_path  # noqa: F401, I001 - first: this file would otherwise shadow the `evaluate` library
import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_mri.data import NEGATIVE_CLASSES
from hf_mri.evaluation import evaluate_folder
from hf_mri.inference import load_model


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "Model folder written by scripts/train.py, or a Hub model id."})
    data_dir: str = field(metadata={"help": "Folder of <class>/<image> (labels from folder names)."})
    output_dir: str = field(default="eval", metadata={"help": "Where eval_results.json and the plots go."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (commit, tag or branch)."})
    negative_classes: str = field(default=",".join(NEGATIVE_CLASSES), metadata={"help": "Healthy folder names."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes for decoding."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, processor = load_model(args.model, args.revision)
    negatives = [name.strip() for name in args.negative_classes.split(",") if name.strip()]
    return evaluate_folder(model, processor, args.data_dir, args.output_dir, negatives, args.batch_size,
                           args.num_workers)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
