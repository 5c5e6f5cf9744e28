"""Robustness and shortcut check: `python scripts/robustness.py --model DIR --data_dir D [--split test] [--tta]`."""

import _script_path  # noqa: F401, I001 - first: keeps scripts/ (and its evaluate.py) off sys.path
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_mri.data import NEGATIVE_CLASSES, labelled_files
from hf_mri.inference import load_model
from hf_mri.robustness import evaluate_robustness, read_split, render_markdown

logger = logging.getLogger("robustness")


@dataclass
class RobustnessArguments:
    model: str = field(metadata={"help": "Model folder written by scripts/train.py, or a Hub model id."})
    data_dir: str = field(metadata={"help": "The image folder (splits.csv paths are relative to it)."})
    splits: str | None = field(
        default=None, metadata={"help": "splits.csv; default <model>/splits.csv, else all files under --data_dir."}
    )
    split: str = field(default="test", metadata={"help": "Which split of splits.csv to score."})
    output_dir: str | None = field(default=None, metadata={"help": "Default <model>/robustness (or ./robustness)."})
    tta: bool = field(default=False, metadata={"help": "Also report metrics averaged with the horizontal flip."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (commit, tag or branch)."})
    negative_classes: str = field(default=",".join(NEGATIVE_CLASSES), metadata={"help": "Healthy folder names."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% intervals."})
    cam_samples: int = field(default=64, metadata={"help": "Images for the Grad-CAM cue check (0 to skip)."})
    seed: int = field(default=0, metadata={"help": "Seed of the Grad-CAM sample."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(RobustnessArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = Path(args.model)
    splits = Path(args.splits) if args.splits else model_dir / "splits.csv"
    if args.splits and not splits.is_file():
        raise FileNotFoundError(f"--splits {splits}: no such file")
    if splits.is_file():
        files, labels = read_split(splits, args.data_dir, args.split)
        logger.info("Scoring the %d %s files of %s", len(files), args.split, splits)
    else:
        negatives = [name.strip() for name in args.negative_classes.split(",") if name.strip()]
        files, labels = labelled_files(args.data_dir, negatives)
        logger.info("No splits.csv at %s: scoring all %d files under %s", splits, len(files), args.data_dir)
    output_dir = args.output_dir or (model_dir / "robustness" if model_dir.is_dir() else Path("robustness"))
    model, processor = load_model(args.model, args.revision)
    result = evaluate_robustness(model, processor, files, labels, n_boot=args.n_boot, tta=args.tta,
                                 batch_size=args.batch_size, cam_samples=args.cam_samples, seed=args.seed,
                                 output_dir=output_dir)  # fmt: skip
    print(render_markdown(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
