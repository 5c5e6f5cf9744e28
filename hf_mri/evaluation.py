"""evaluate_folder(): score a saved or published model on a whole labelled image folder, with plots and JSON."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import NEGATIVE_CLASSES, labelled_files
from .inference import predict_files
from .reporting import write_evaluation_report, write_results_json

__all__ = ["evaluate_folder"]

logger = logging.getLogger(__name__)


def evaluate_folder(
    model: Any,
    processor: Any,
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    negative_classes: Sequence[str] = NEGATIVE_CLASSES,
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Score every image under `data_dir` (labels from folder names); unreadable files are listed, not fatal.

    Writes `eval_results.json`, `confusion_matrix.png`, `roc_curve.png` and `predictions.csv` to `output_dir`.
    """
    paths, labels = labelled_files(data_dir, negative_classes)
    if not paths:
        raise ValueError(f"{data_dir}: no image files found (expected <root>/<class>/<image>)")
    label_of = dict(zip(map(str, paths), labels))
    rows = list(predict_files(model, processor, paths, batch_size=batch_size, num_workers=num_workers))
    scored = [row for row in rows if "p_tumor" in row]
    failed = [row for row in rows if "error" in row]
    for row in failed:
        logger.warning("Skipped %s", row["error"])
    if not scored:
        raise ValueError(f"{data_dir}: none of the {len(rows)} files could be read")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    probabilities = np.array([row["p_tumor"] for row in scored])
    truth = np.array([label_of[row["path"]] for row in scored])
    threshold = float(getattr(model.config, "threshold", 0.5))
    metrics = write_evaluation_report(probabilities, truth, out, prefix="eval", threshold=threshold)
    metrics.update(eval_files_found=len(rows), eval_files_skipped=len(failed),
                   eval_skipped=[row["error"] for row in failed])  # fmt: skip
    write_results_json(metrics, out / "eval_results.json")
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "p_tumor", "predicted", "error"])
        for row in rows:
            writer.writerow([row["path"], label_of[row["path"]], row.get("p_tumor", ""), row.get("label", ""),
                             row.get("error", "")])  # fmt: skip
    logger.info("Evaluated %d files (%d skipped): %s", len(scored), len(failed),
                {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})  # fmt: skip
    return metrics
