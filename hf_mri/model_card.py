"""Model card: render `model_card.md` with the real results, data and settings of a trained model folder."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["read_json", "scrub_paths", "write_model_card"]

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_PATHS = (PACKAGE_DIR.parent / "model_card.md", PACKAGE_DIR / "model_card_template.md")
METRICS = {
    "accuracy": "Accuracy",
    "precision": "Precision (PPV)",
    "recall": "Recall (sensitivity)",
    "specificity": "Specificity",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
}
PLOTS = (("confusion_matrix.png", "Confusion matrix"), ("roc_curve.png", "ROC curve"))
TAGS = ["medical-imaging", "brain-mri", "mri", "vgg16", "image-classification", "custom_code"]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or `{}` (with a warning) when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("Ignoring unreadable %s: %s", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def _fmt(value: Any, metric: bool = False) -> str:
    """Metrics with 4 decimals, other floats in their shortest form (1e-05, 0.5), None/NaN as n/a."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if metric else f"{value:g}"
    return str(value)


def scrub_paths(value: Any, data_dir: str | None) -> Any:
    """Local absolute paths -> relative to the data folder, or their file name (never publish home dirs)."""
    if isinstance(value, dict):
        return {key: scrub_paths(item, data_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_paths(item, data_dir) for item in value]
    if isinstance(value, str) and os.path.isabs(value) and len(value) > 1:
        if data_dir and value.startswith(data_dir.rstrip("/") + "/"):
            return os.path.relpath(value, data_dir)
        return Path(value).name
    return value


DATA_FACTS = (  # (data_report.json key, sentence); lists count their items; missing keys are left out
    ("files_found", "{} image files found"),
    ("skipped", "{} unreadable or non-image files skipped (listed in `data_report.json`)"),
    ("exact_duplicates_removed", "{} exact duplicates removed"),
    ("near_duplicate_groups", "{} groups of near-duplicates, each kept inside one split"),
    ("test_leaks_removed", "{} training copies of test images dropped"),
    ("conflicting_images_dropped", "{} images dropped for conflicting labels"),
)


def _data_summary(report: dict[str, Any]) -> dict[str, Any] | None:
    if not report:
        return None
    label_names = report.get("label_names") or ["no_tumor", "tumor"]
    counts = report.get("label_counts") or {}
    facts = [
        text.format(len(report[key]) if isinstance(report[key], list) else report[key])
        for key, text in DATA_FACTS
        if report.get(key) is not None
    ]
    split = {key: report.get(key) for key in ("seed", "val_fraction", "test_fraction") if report.get(key) is not None}
    return {
        "name": Path(str(report.get("data_dir", "unknown"))).name,
        "layout": report.get("layout", "unknown"),
        "dedupe": report.get("dedupe"),
        "facts": facts,
        "split": ", ".join(f"{key} **{value}**" for key, value in split.items()) or "not recorded",
        "label_names": label_names,
        "counts": [(name, [c.get(n, 0) for n in label_names] + [sum(c.values())]) for name, c in counts.items()],
        "class_counts": list((report.get("class_counts") or {}).items()),
    }


def write_model_card(
    model_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    space_id: str | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    template: str | os.PathLike | None = None,
    output_path: str | os.PathLike | None = None,
) -> Path:
    """Render the model card (metadata + `model-index` with the real test results) into `model_dir/README.md`.

    Reads `config.json`, `preprocessor_config.json`, `test_results.json`, `data_report.json` and
    `training_config.json` from `model_dir`; a missing results file makes the card say "not evaluated".
    """
    model_dir = Path(model_dir)
    config = read_json(model_dir / "config.json")
    if not config:
        raise FileNotFoundError(f"{model_dir}: no readable config.json; is this a folder written by save_pretrained?")
    template = Path(template) if template else next((p for p in TEMPLATE_PATHS if p.is_file()), None)
    if template is None or not template.is_file():
        raise FileNotFoundError(f"model card template not found (looked for {', '.join(map(str, TEMPLATE_PATHS))})")
    repo_id = repo_id or f"your-namespace/{model_dir.resolve().name}"  # push() renders it again with the real id
    results = read_json(model_dir / "test_results.json")
    report = read_json(model_dir / "data_report.json")
    data_dir = report.get("data_dir")
    hyper = scrub_paths(read_json(model_dir / "training_config.json"), data_dir)
    preprocessing = read_json(model_dir / "preprocessor_config.json")
    preprocessing = {k: v for k, v in preprocessing.items() if k not in ("auto_map", "image_processor_type")}

    threshold = results.get("test_threshold", config.get("threshold", 0.5))
    task = {"task_type": "image-classification", "task_name": "Brain tumour detection (binary)"}
    dataset = {"dataset_type": (datasets or ["imagefolder"])[0], "dataset_split": "test"}
    dataset["dataset_name"] = f"{Path(str(data_dir)).name} (held-out test split)" if data_dir else "held-out test split"
    values = {key: results[f"test_{key}"] for key in METRICS if f"test_{key}" in results}
    metric_rows = [(METRICS[key], _fmt(value, metric=True)) for key, value in values.items()]
    eval_results = [
        EvalResult(
            **task,
            **dataset,
            metric_type=key,
            metric_name=f"Test {METRICS[key]}",
            metric_value=float(value),
            metric_args={"threshold": threshold},
        )
        for key, value in values.items()
        if isinstance(value, (int, float)) and math.isfinite(value)
    ]
    matrix = results.get("test_confusion_matrix")
    confusion = None
    if isinstance(matrix, list) and len(matrix) == 2 and all(isinstance(r, list) and len(r) == 2 for r in matrix):
        (tn, fp), (fn, tp) = matrix
        confusion = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    weights_source = str(config.get("weights_source", "random"))

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        tags=TAGS,
        datasets=datasets,
        metrics=[key for key in METRICS if key != "specificity"],
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        revision=revision or "main",
        space_id=space_id,
        threshold=_fmt(float(threshold)),
        num_samples=results.get("test_num_samples", sum(map(sum, matrix)) if confusion else "n/a"),
        metrics=metric_rows,
        confusion=confusion,
        plots=[(name, caption) for name, caption in PLOTS if (model_dir / name).is_file()],
        data=_data_summary(report),
        preprocessing=[(k, _fmt(v)) for k, v in sorted(preprocessing.items())],
        hyperparameters=[(k, _fmt(v)) for k, v in sorted(hyper.items()) if not isinstance(v, (dict, list))],
        augment=hyper.get("augment"),
        weights_source=weights_source,
        random_init=weights_source.lower().startswith(("random", "none")) or not weights_source,
        **{key: config.get(key) for key in ("batch_norm", "head", "dropout", "freeze_blocks")},
        vgg_layers=json.dumps(config.get("vgg_layers")),
        image_size=config.get("image_size"),
    )
    card.text = re.sub(r"\n{3,}", "\n\n", card.text)
    out = Path(output_path) if output_path else model_dir / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    card.save(out)
    logger.info("Wrote model card %s (%d test metrics)", out, len(eval_results))
    return out
