"""Command-line argument dataclasses for training, with defaults suited to binary MRI classification."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["QUICKSTART_ARGS", "DataArguments", "ModelArguments", "MriTrainingArguments", "parse_train_args"]


@dataclass
class ModelArguments:
    """Which model to build and how to initialise it."""

    weights: str = field(
        default="auto",
        metadata={
            "help": "'auto' (ImageNet if it can be downloaded, else random init with a warning), 'imagenet' "
            "(must have it), 'random', or a path to a torchvision .pth / timm .safetensors VGG16 state dict."
        },
    )
    image_size: int = field(default=224, metadata={"help": "Input height and width in pixels (>= 32)."})
    batch_norm: bool = field(default=False, metadata={"help": "Use VGG16-BN (trains far more easily from scratch)."})
    head: str = field(default="vgg", metadata={"help": "'vgg' (fc6/fc7 + one neuron) or 'compact' (GAP + MLP)."})
    dropout: float = field(default=0.5, metadata={"help": "Dropout probability in the head."})
    freeze_blocks: int = field(default=0, metadata={"help": "Conv blocks frozen from the input side (0-5)."})
    vgg_layers: str | None = field(
        default=None, metadata={"help": 'Conv table as JSON, e.g. \'[8, "M", 16, "M"]\' (default: VGG16).'}
    )
    hidden_size: int = field(default=4096, metadata={"help": "fc6/fc7 width of the 'vgg' head."})
    compact_hidden_size: int = field(default=256, metadata={"help": "MLP width of the 'compact' head."})
    label_smoothing: float = field(default=0.0, metadata={"help": "BCE label smoothing in [0, 0.5)."})
    class_weighting: bool = field(
        default=False, metadata={"help": "Weight positives by n_negative / n_positive of the training split."}
    )
    threshold: float = field(default=0.5, metadata={"help": "Decision threshold on P(tumour)."})
    target_sensitivity: float | None = field(
        default=None,
        metadata={"help": "Pick the threshold on the validation split to reach at least this sensitivity."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without a better validation ROC-AUC."}
    )
    channels_last: bool = field(
        default=False,
        metadata={"help": "channels_last memory format; on CPU use it with --bf16, which it makes fast."},
    )
    cache_features: bool = field(
        default=False,
        metadata={"help": "With --freeze_blocks covering every block: compute conv features once and reuse them."},
    )

    def config_overrides(self) -> dict:
        """The `MriVggConfig` fields these arguments set."""
        overrides = {
            "image_size": self.image_size,
            "batch_norm": self.batch_norm,
            "head": self.head,
            "dropout": self.dropout,
            "freeze_blocks": self.freeze_blocks,
            "hidden_size": self.hidden_size,
            "compact_hidden_size": self.compact_hidden_size,
            "label_smoothing": self.label_smoothing,
            "threshold": self.threshold,
        }
        if self.vgg_layers:
            overrides["vgg_layers"] = json.loads(self.vgg_layers)
        return overrides


@dataclass
class DataArguments:
    """Where the images are, how they are split, preprocessed and augmented."""

    data_dir: str | None = field(
        default=None,
        metadata={"help": "Image folder (<root>/<class>/...), or a Hub dataset id. Default: the bundled sample."},
    )
    val_fraction: float = field(default=0.15, metadata={"help": "Validation fraction (0.1 for 80/10/10)."})
    test_fraction: float = field(default=0.15, metadata={"help": "Test fraction, unless the folder has its own."})
    negative_classes: str = field(
        default="no,notumor,no_tumor,healthy,normal",
        metadata={"help": "Comma-separated folder names labelled healthy (0); every other class is tumour (1)."},
    )
    dedupe: bool = field(default=True, metadata={"help": "Remove exact duplicates and group near-duplicates."})
    augment: bool = field(default=True, metadata={"help": "Random flips, rotations, affine and intensity jitter."})
    augment_preset: str = field(
        default="light", metadata={"help": "'light' (geometry + mild jitter) or 'strong' (+ gamma, equalise, blur)."}
    )
    crop_foreground: bool = field(default=True, metadata={"help": "Crop each image to the head's bounding box."})
    resize_mode: str = field(default="pad", metadata={"help": "'pad' (keep aspect ratio) or 'stretch'."})
    denoise: str = field(default="median", metadata={"help": "'median', 'gaussian', 'nlmeans' or 'none'."})
    equalize: str = field(default="clahe", metadata={"help": "'clahe', 'global' or 'none'."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into a non-empty --output_dir (else it is refused)."}
    )

    def negative_class_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.negative_classes.split(",") if name.strip())

    def processor_kwargs(self) -> dict:
        return {
            "crop_foreground": self.crop_foreground,
            "resize_mode": self.resize_mode,
            "denoise": self.denoise,
            "equalize": self.equalize,
        }


@dataclass
class MriTrainingArguments(TrainingArguments):
    """`TrainingArguments` with this project's defaults: validate and checkpoint every epoch, keep the best
    model by validation ROC-AUC, keep every dataset column for our transforms."""

    output_dir: str | None = field(default="runs/mri-vgg16", metadata={"help": "Where the model folder goes."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on the validation split."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Restore the best checkpoint at the end."})
    metric_for_best_model: str | None = field(default="roc_auc", metadata={"help": "Validation metric to keep."})
    greater_is_better: bool | None = field(default=True, metadata={"help": "Higher metric_for_best_model is better."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (best and latest)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: transforms need them."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (int) or fraction of steps (<1)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Evaluation batch size per device."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})


# What `scripts/train.py` runs with no arguments: the bundled sample, small enough for a laptop CPU.
QUICKSTART_ARGS = [
    "--output_dir",
    "runs/quickstart",
    "--image_size",
    "96",
    "--batch_norm",
    "--head",
    "compact",
    "--num_train_epochs",
    "8",
    "--per_device_train_batch_size",
    "8",
    "--learning_rate",
    "3e-4",
    "--use_cpu",
    "--overwrite_output_dir",
]


def parse_train_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, MriTrainingArguments]:
    """Parse flags; a leading `.json` file supplies defaults that later flags override."""
    from transformers import HfArgumentParser

    if argv and argv[0].endswith(".json"):
        with open(argv[0], encoding="utf-8") as handle:
            config = json.load(handle)
        argv = [item for key, value in config.items() for item in _as_flags(key, value)] + list(argv[1:])
    parser = HfArgumentParser((ModelArguments, DataArguments, MriTrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def _as_flags(key: str, value) -> list[str]:
    if isinstance(value, list):
        return [f"--{key}", *map(str, value)] if key != "vgg_layers" else [f"--{key}", json.dumps(value)]
    if value is None:
        return []
    return [f"--{key}", str(value)]
