"""Binary tumour-classification metrics: an offline `evaluate` metric, Trainer hook, threshold and CIs."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import datasets
import evaluate
import numpy as np
from scipy.special import expit
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = [
    "METRIC_NAMES",
    "BinaryClassificationMetrics",
    "bootstrap_ci",
    "choose_threshold_for_sensitivity",
    "compute_binary_metrics",
    "make_compute_metrics",
]

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")
"""Scalar metrics in every result dict (the confusion matrix comes on top of these)."""

IGNORE_INDEX = -100  # label value Trainer uses for padding; such rows are dropped

_DESCRIPTION = (
    "Binary classification metrics for one-logit tumour classifiers (positive class = tumour = 1), "
    "computed offline with scikit-learn."
)
_INPUTS_DESCRIPTION = """
Args:
    predictions (`list[float]`): probability of the positive class (tumour), in [0, 1].
    references (`list[int]`): ground-truth labels, 0 (no tumour) or 1 (tumour).
    threshold (`float`, *optional*, defaults to 0.5): a prediction is positive iff probability >= threshold.
Returns:
    accuracy, precision, recall (sensitivity), specificity, f1, roc_auc (NaN when only one class is
    present) and confusion_matrix as [[tn, fp], [fn, tp]].
"""


def _as_arrays(probabilities: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to 1-D ``(float probabilities, int labels)`` arrays."""
    probs = np.asarray(probabilities)
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    probs = probs.reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if probs.shape != y.shape:
        raise ValueError(
            f"probabilities and labels must have the same length, got {probs.size} and {y.size}; "
            "pass one probability per example"
        )
    if probs.size == 0:
        raise ValueError("cannot compute metrics on 0 examples; pass at least one prediction")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError(
            f"probabilities must be finite and in [0, 1], got [{np.nanmin(probs)}, {np.nanmax(probs)}]; "
            "if these are logits apply a sigmoid first (make_compute_metrics does this)"
        )
    if not np.all((y == 0) | (y == 1)):
        bad = np.unique(y[(y != 0) & (y != 1)])[:5].tolist()
        raise ValueError(f"labels must be 0 (no tumour) or 1 (tumour), got {bad}; binarise labels first")
    return probs, y.astype(np.int64)


def _metrics_from_arrays(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    """Compute the metric dict from validated arrays (see `compute_binary_metrics`)."""
    pred = (probs >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    if np.unique(y).size < 2:
        roc_auc = float("nan")
        logger.warning("ROC-AUC is undefined with only one class in the labels (n=%d); reporting NaN", y.size)
    else:
        roc_auc = float(roc_auc_score(y, probs))
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, labels=[0, 1], zero_division=0)),
        "recall": float(recall_score(y, pred, labels=[0, 1], zero_division=0)),
        "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "f1": float(f1_score(y, pred, labels=[0, 1], zero_division=0)),
        "roc_auc": roc_auc,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def compute_binary_metrics(probabilities: Any, labels: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of tumour probabilities against 0/1 labels; predicted positive iff probability >= threshold.

    Returns ``accuracy, precision, recall, specificity, f1, roc_auc`` as floats and ``confusion_matrix`` as
    ``[[tn, fp], [fn, tp]]`` (always 2x2). Undefined ratios are 0 (``zero_division=0``); ``roc_auc`` is NaN
    when the labels hold only one class.
    """
    probs, y = _as_arrays(probabilities, labels)
    return _metrics_from_arrays(probs, y, float(threshold))


class BinaryClassificationMetrics(evaluate.Metric):
    """Offline `evaluate.Metric` for one-logit binary classifiers; no download, no Hub access.

    Inputs are ``predictions`` (tumour probabilities, stored as float32) and ``references`` (0/1, int32);
    ``compute(threshold=...)`` sets the operating point (default 0.5), compared at float32 precision.
    Results match `compute_binary_metrics`.

    By default (``keep_in_memory=True``) nothing is written to disk. Under Trainer, even in distributed runs,
    predictions are already gathered onto every process, so each process computes on the full set with its
    own in-memory instance. evaluate's own multi-process mode (``num_process > 1``) needs
    ``keep_in_memory=False``, a ``cache_dir`` shared by all processes and a unique ``experiment_id``.
    """

    def __init__(self, *args: Any, keep_in_memory: bool | None = None, **kwargs: Any) -> None:
        if keep_in_memory is None:
            keep_in_memory = kwargs.get("num_process", 1) == 1
        super().__init__(*args, keep_in_memory=keep_in_memory, **kwargs)

    def _build_data_dir(self) -> str:
        # evaluate creates <cache_dir>/<name>/<config> even for in-memory metrics, where nothing is read or
        # written there: skip creating it (the default cache may be read-only or shared between users).
        if self.keep_in_memory:
            return os.path.join(self._data_dir_root, self.name, self.config_name)
        return super()._build_data_dir()

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("int32")}
            ),
            format="numpy",
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions: np.ndarray, references: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
        probs, y = _as_arrays(np.asarray(predictions, dtype=np.float32), references)
        return _metrics_from_arrays(probs, y, np.float32(threshold))


def _sigmoid_from_predictions(predictions: Any) -> np.ndarray:
    """Tumour probabilities from logits of shape (N,) or (N, 1), or a tuple whose first item is those."""
    while isinstance(predictions, tuple):  # model returned extra outputs; logits come first
        predictions = predictions[0]
    logits = np.asarray(predictions, dtype=np.float64)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim != 1:
        raise ValueError(
            f"expected one logit per example with shape (N,) or (N, 1), got {logits.shape}; "
            "the model must have a single output (num_labels=1)"
        )
    return expit(logits)


def make_compute_metrics(
    threshold: float | Callable[[], float] = 0.5,
) -> Callable[[Any], dict[str, float | int]]:
    """Build ``compute_metrics`` for `transformers.Trainer` on a one-logit model.

    The returned function takes an `EvalPrediction` (or ``(predictions, label_ids)``), applies a sigmoid,
    predicts tumour iff probability >= threshold and returns scalar metrics only: ``accuracy, precision,
    recall, specificity, f1, roc_auc`` and the confusion matrix as ints ``tn, fp, fn, tp``. ``threshold``
    may be a zero-argument callable, read at every call. Labels equal to -100 (padding) are dropped.
    Not for ``batch_eval_metrics=True``.
    """

    def compute_metrics(eval_pred: Any) -> dict[str, float | int]:
        if hasattr(eval_pred, "predictions"):
            predictions, label_ids = eval_pred.predictions, eval_pred.label_ids
        else:
            predictions, label_ids = eval_pred[0], eval_pred[1]
        if label_ids is None:
            raise ValueError("compute_metrics needs labels; the eval dataset must have a 'labels' column")
        probs = _sigmoid_from_predictions(predictions)
        labels = np.asarray(label_ids[0] if isinstance(label_ids, (tuple, list)) else label_ids).reshape(-1)
        if labels.shape != probs.shape:
            raise ValueError(f"got {probs.size} predictions but {labels.size} labels; they must match")
        keep = labels != IGNORE_INDEX
        labels = np.rint(labels[keep]).astype(np.int64) if np.issubdtype(labels.dtype, np.floating) else labels[keep]
        current = threshold() if callable(threshold) else threshold
        result = compute_binary_metrics(probs[keep], labels, threshold=float(current))
        (tn, fp), (fn, tp) = result.pop("confusion_matrix")
        result.update(tn=tn, fp=fp, fn=fn, tp=tp)
        return result

    return compute_metrics


def choose_threshold_for_sensitivity(probabilities: Any, labels: Any, target_sensitivity: float) -> float:
    """Highest threshold whose sensitivity (recall of label 1; positive iff prob >= threshold) >= target.

    The answer is always one of the positive examples' probabilities, so it is exactly reproducible on the
    same probabilities; compute validation and test probabilities the same way (same dtype) to reuse it.
    """
    if not 0 < target_sensitivity <= 1:
        raise ValueError(
            f"target_sensitivity must be in (0, 1], got {target_sensitivity}; e.g. 0.95 for 95% sensitivity"
        )
    probs, y = _as_arrays(probabilities, labels)
    positives = np.sort(probs[y == 1])[::-1]
    n_pos = positives.size
    if n_pos == 0:
        raise ValueError("cannot choose a threshold for sensitivity without positive (tumour) examples")
    k = max(1, math.ceil(target_sensitivity * n_pos - 1e-9))
    while k < n_pos and k / n_pos < target_sensitivity:  # guard against float round-off in the ceil above
        k += 1
    return float(positives[k - 1])


def _bootstrap_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Multiplicity of each example in each resample, shape (n_boot, n)."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def _weighted_metrics(
    w: np.ndarray, pos: np.ndarray, pred: np.ndarray, order: np.ndarray, starts: np.ndarray
) -> dict[str, np.ndarray]:
    """Scalar metrics for each row of example weights ``w`` (n_boot, n); AUC by tie-aware Mann-Whitney."""
    neg = ~pos
    tp, fn = w @ (pos & pred), w @ (pos & ~pred)
    fp, tn = w @ (neg & pred), w @ (neg & ~pred)
    n_pos, n_neg = tp + fn, fp + tn
    with np.errstate(divide="ignore", invalid="ignore"):

        def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
            return np.where(den > 0, num / den, 0.0)

        # positives/negatives per distinct probability (ascending); a tied pair counts one half
        wp = np.add.reduceat((w * pos)[:, order], starts, axis=1)
        wn = np.add.reduceat((w * neg)[:, order], starts, axis=1)
        below = np.cumsum(wn, axis=1) - wn
        auc = np.where((n_pos > 0) & (n_neg > 0), (wp * (below + 0.5 * wn)).sum(axis=1) / (n_pos * n_neg), np.nan)
        return {
            "accuracy": (tp + tn) / w.sum(axis=1),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, n_pos),
            "specificity": ratio(tn, n_neg),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "roc_auc": auc,
        }


def bootstrap_ci(
    probabilities: Any,
    labels: Any,
    threshold: float = 0.5,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap ``(low, high)`` confidence intervals (level 1 - alpha) for every scalar metric.

    Examples are resampled with replacement (seeded). Resamples holding a single class, where ROC-AUC is
    undefined, are skipped for all metrics; if the data itself holds one class none are skipped and the
    ``roc_auc`` interval is ``(nan, nan)``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}; 1000 is a common choice")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}; 0.05 gives 95% intervals")
    probs, y = _as_arrays(probabilities, labels)
    n = y.size
    pos, pred = y == 1, probs >= threshold
    order = np.argsort(probs, kind="stable")
    sorted_probs = probs[order]
    starts = np.flatnonzero(np.r_[True, sorted_probs[1:] != sorted_probs[:-1]])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # bound memory to a few (chunk, n) float arrays
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_boot, chunk):
        w = _bootstrap_counts(rng, n, min(chunk, n_boot - start))
        parts.append(_weighted_metrics(w, pos, pred, order, starts))
    values = {name: np.concatenate([p[name] for p in parts]) for name in METRIC_NAMES}
    if np.unique(y).size == 2:
        valid = ~np.isnan(values["roc_auc"])
        if not valid.any():
            raise ValueError("every bootstrap resample held a single class; use more examples or more resamples")
        values = {name: v[valid] for name, v in values.items()}
    result: dict[str, tuple[float, float]] = {}
    for name in METRIC_NAMES:
        v = values[name]
        if np.isnan(v).all():
            result[name] = (float("nan"), float("nan"))
        else:
            low, high = np.nanpercentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            result[name] = (float(low), float(high))
    return result
