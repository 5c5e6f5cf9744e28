"""Fine-tune the MRI VGG16: `accelerate launch scripts/train.py [config.json] [--flags]` (no flags: quick start)."""

import _script_path  # noqa: F401, I001 - first: keeps scripts/ (and its evaluate.py) off sys.path
import logging
import sys

import transformers

from hf_mri.arguments import QUICKSTART_ARGS, parse_train_args
from hf_mri.training import train

logger = logging.getLogger("hf_mri")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    quickstart = not argv
    model_args, data_args, training_args = parse_train_args(QUICKSTART_ARGS if quickstart else argv)
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO if level <= logging.INFO or training_args.process_index == 0 else level)
    transformers.utils.logging.set_verbosity(min(level, logging.WARNING))
    if quickstart:
        logger.info(
            "No arguments given: quick start on the bundled sample (%s). Pass --data_dir DIR to train on your "
            "own folder; see README.md for the full recipe.",
            " ".join(QUICKSTART_ARGS),
        )
    return train(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
