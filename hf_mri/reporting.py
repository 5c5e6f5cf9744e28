"""Evaluation artefacts: confusion-matrix and ROC plots (PNG) and the results JSON."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from .metrics import _as_arrays, compute_binary_metrics

__all__ = [
    "plot_confusion_matrix",
    "plot_roc_curve",
    "write_evaluation_report",
    "write_results_json",
]

logger = logging.getLogger(__name__)

DEFAULT_LABELS: tuple[str, str] = ("no_tumor", "tumor")


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, so no global state and no GUI backend."""
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    fig.clear()
    logger.info("Wrote %s", path)
    return path


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    path: str | os.PathLike[str],
    labels: Sequence[str] = DEFAULT_LABELS,
    title: str = "Confusion matrix",
) -> Path:
    """Save a 2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` (rows = true class) with counts and row %."""
    matrix = np.asarray(cm, dtype=np.int64)
    if matrix.shape != (2, 2) or (matrix < 0).any():
        raise ValueError(f"cm must be a 2x2 matrix of counts [[tn, fp], [fn, tp]], got {np.asarray(cm).tolist()}")
    if len(labels) != 2:
        raise ValueError(f"labels must name the 2 classes (negative, positive), got {list(labels)}")
    row_sums = matrix.sum(axis=1, keepdims=True)
    row_frac = np.divide(matrix, row_sums, out=np.zeros((2, 2)), where=row_sums > 0)

    fig = _new_figure((5.5, 4.8))
    ax = fig.add_subplot()
    image = ax.imshow(row_frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of true class")
    for i in range(2):
        for j in range(2):
            color = "white" if row_frac[i, j] > 0.5 else "black"
            text = f"{matrix[i, j]}\n({100 * row_frac[i, j]:.1f}%)"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=12)
    ax.set_xticks([0, 1], labels=list(labels))
    ax.set_yticks([0, 1], labels=list(labels))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"{title}\nn = {int(matrix.sum())}")
    return _save(fig, path)


def plot_roc_curve(
    probabilities: Any,
    labels: Any,
    path: str | os.PathLike[str],
    threshold: float | None = None,
    title: str = "ROC curve",
) -> Path:
    """Save the ROC curve with its AUC, marking the operating point at ``threshold`` (prob >= threshold).

    With a single class in ``labels`` the ROC is undefined: the figure says so instead of failing.
    """
    probs, y = _as_arrays(probabilities, labels)

    fig = _new_figure((5.0, 5.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title)
    if np.unique(y).size < 2:
        logger.warning("ROC curve undefined: labels hold a single class (n=%d)", y.size)
        ax.text(
            0.5,
            0.5,
            f"ROC undefined:\nonly one class present (n={y.size})",
            ha="center",
            va="center",
            fontsize=12,
            transform=ax.transAxes,
            bbox={"facecolor": "white", "edgecolor": "grey"},
        )
        return _save(fig, path)

    fpr, tpr, _ = roc_curve(y, probs)
    auc = roc_auc_score(y, probs)
    ax.plot(fpr, tpr, color="tab:blue", linewidth=2, label=f"ROC (AUC = {auc:.3f})")
    if threshold is not None:
        pred = probs >= threshold
        op_tpr = float(pred[y == 1].mean())
        op_fpr = float(pred[y == 0].mean())
        ax.plot(
            [op_fpr],
            [op_tpr],
            marker="o",
            markersize=8,
            color="tab:red",
            linestyle="none",
            label=f"threshold {threshold:.3g}: sens {op_tpr:.3f}, spec {1 - op_fpr:.3f}",
        )
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, path)


def _to_jsonable(value: Any) -> Any:
    """Plain-JSON copy of ``value``: numpy and tuples converted, NaN and infinities as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _to_jsonable(value.tolist())
    if isinstance(value, (list, tuple, set)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_results_json(metrics: Mapping[str, Any], path: str | os.PathLike[str], prefix: str | None = None) -> Path:
    """Write ``metrics`` as JSON atomically (temp file + ``os.replace``); NaN becomes ``null``.

    With ``prefix`` (``"test"`` or ``"test_"``) top-level keys become ``test_<key>``; keys that already
    carry the prefix are left as they are.
    """
    if prefix:
        prefix = prefix if prefix.endswith("_") else f"{prefix}_"
        metrics = {(k if str(k).startswith(prefix) else f"{prefix}{k}"): v for k, v in metrics.items()}
    text = json.dumps(_to_jsonable(metrics), indent=2, sort_keys=True, allow_nan=False) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("Wrote %s", path)
    return path


def write_evaluation_report(
    probabilities: Any,
    labels: Any,
    output_dir: str | os.PathLike[str],
    prefix: str = "test",
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Compute metrics and write ``{prefix}_results.json``, ``confusion_matrix.png`` and ``roc_curve.png``.

    Returns the metrics with prefixed keys (``test_accuracy``, ..., ``test_confusion_matrix``) plus
    ``{prefix}_threshold`` and ``{prefix}_num_samples``; ``roc_auc`` is NaN (``null`` in the JSON) when
    only one class is present.
    """
    prefix = prefix.rstrip("_")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = compute_binary_metrics(probabilities, labels, threshold=threshold)
    metrics["threshold"] = float(threshold)
    metrics["num_samples"] = int(np.asarray(labels).size)
    results = {f"{prefix}_{key}": value for key, value in metrics.items()}
    write_results_json(results, output_dir / f"{prefix}_results.json")
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        output_dir / "confusion_matrix.png",
        title=f"Confusion matrix ({prefix}, threshold {threshold:.3g})",
    )
    plot_roc_curve(
        probabilities,
        labels,
        output_dir / "roc_curve.png",
        threshold=threshold,
        title=f"ROC curve ({prefix})",
    )
    return results
