"""evaluate_robustness(): CIs, per-class/per-source breakdowns, perturbation and Grad-CAM shortcut checks."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .image_processing_mri_vgg import DEFAULT_MAX_PIXELS, load_image, to_grayscale_uint8
from .metrics import METRIC_NAMES, bootstrap_ci, compute_binary_metrics
from .perturbations import PERTURBATIONS, cam_inside_head, hflip, score_images
from .reporting import write_results_json

__all__ = ["evaluate_robustness", "read_split", "render_markdown", "source_of", "write_robustness_report"]

logger = logging.getLogger(__name__)

_PREFIX = re.compile(r"^([^-_]+)[-_]")


def source_of(path: str | os.PathLike) -> str:
    """Source tag of a file: its name's prefix before the first '-' or '_' (``Tr-gl_001.jpg`` -> ``Tr``)."""
    match = _PREFIX.match(Path(path).name)
    return match.group(1) if match else "(none)"


def _load(files: Sequence[str | os.PathLike], max_pixels: int) -> tuple[list[Image.Image], list[int], list[str]]:
    """Decode every file once to an 8-bit grey PIL image; unreadable files are reported, not fatal."""
    images, kept, skipped = [], [], []
    for index, file in enumerate(tqdm(files, desc="loading", unit="img")):
        try:
            images.append(Image.fromarray(to_grayscale_uint8(load_image(file, max_pixels)), mode="L"))
            kept.append(index)
        except Exception as err:  # noqa: BLE001 - one odd file must not stop the run
            skipped.append(f"{file}: {type(err).__name__}: {err}")
            logger.warning("Skipping %s: %s", file, err)
    return images, kept, skipped


def _with_ci(probs: np.ndarray, y: np.ndarray, threshold: float, n_boot: int) -> dict[str, Any]:
    point = compute_binary_metrics(probs, y, threshold)
    cis = bootstrap_ci(probs, y, threshold, n_boot=n_boot)
    result: dict[str, Any] = {name: {"value": point[name], "ci": list(cis[name])} for name in METRIC_NAMES}
    result["confusion_matrix"] = point["confusion_matrix"]
    result["n"] = int(y.size)
    return result


def _proportion_ci(hits: int, n: int, n_boot: int, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of a proportion (resampling n Bernoulli outcomes = binomial draws)."""
    draws = np.random.default_rng(seed).binomial(n, hits / n, size=n_boot) / n
    return [float(v) for v in np.percentile(draws, [2.5, 97.5])]


def _auc(probs: np.ndarray, y: np.ndarray) -> float:
    return compute_binary_metrics(probs, y)["roc_auc"] if np.unique(y).size == 2 else float("nan")


def _per_class(names: Sequence[str], probs: np.ndarray, y: np.ndarray, threshold: float, n_boot: int) -> dict:
    """Per class folder: sensitivity (tumour folders), specificity (healthy ones), else accuracy, with CIs."""
    names, pred = np.asarray(names), (probs >= threshold).astype(int)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names.tolist())):
        sel = names == name
        n, n_pos = int(sel.sum()), int(y[sel].sum())
        correct = int((pred[sel] == y[sel]).sum())
        metric = "sensitivity" if n_pos == n else "specificity" if n_pos == 0 else "accuracy"
        row = {"n": n, "n_tumor": n_pos, "metric": metric, "value": correct / n, "n_correct": correct,
               "ci": _proportion_ci(correct, n, n_boot), "mean_p_tumor": float(probs[sel].mean())}  # fmt: skip
        if n_pos == n:
            healthy = y == 0
            row["roc_auc_vs_healthy"] = _auc(np.r_[probs[sel], probs[healthy]], np.r_[y[sel], y[healthy]])
        out[name] = row
    return out


def _per_source(sources: Sequence[str], probs: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    sources, pred = np.asarray(sources), probs >= threshold
    out = {}
    for source in sorted(set(sources.tolist())):
        sel = sources == source
        pos, neg = sel & (y == 1), sel & (y == 0)
        out[source] = {
            "n": int(sel.sum()), "n_tumor": int(pos.sum()), "n_healthy": int(neg.sum()),
            "accuracy": float((pred[sel] == y[sel]).mean()),
            "sensitivity": float(pred[pos].mean()) if pos.any() else float("nan"),
            "specificity": float((~pred[neg]).mean()) if neg.any() else float("nan"),
            "roc_auc": _auc(probs[sel], y[sel]),
        }  # fmt: skip
    return out


def _perturbation_row(p: np.ndarray, clean: np.ndarray, y: np.ndarray, threshold: float, clean_auc: float) -> dict:
    ok = np.isfinite(p) & np.isfinite(clean)
    if not ok.any():
        return {"n": 0, "n_failed": int(ok.size)}
    p, c, t = p[ok], clean[ok], y[ok]
    metrics = compute_binary_metrics(p, t, threshold)
    return {
        "n": int(ok.sum()), "n_failed": int((~ok).sum()),
        "roc_auc": metrics["roc_auc"], "auc_drop": clean_auc - metrics["roc_auc"],
        "accuracy": metrics["accuracy"], "sensitivity": metrics["recall"], "specificity": metrics["specificity"],
        "mean_abs_dp": float(np.abs(p - c).mean()), "mean_dp": float((p - c).mean()),
        "flip_rate": float(((p >= threshold) != (c >= threshold)).mean()),
    }  # fmt: skip


def _cam_summary(inside: np.ndarray, area: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Distribution of the share of Grad-CAM energy inside the head mask (vs the background/frame)."""
    ok = np.isfinite(inside)
    if not ok.any():
        return {"n": 0, "n_zero_cam": len(inside), "mean_inside": float("nan")}
    values, labels = inside[ok], labels[ok]
    quantiles = np.percentile(values, [10, 25, 50, 75, 90])
    return {
        "n": int(ok.sum()), "n_zero_cam": int((~ok).sum()), "target": "predicted class",
        "mean_inside": float(values.mean()), "mean_outside": float(1 - values.mean()),
        "quantiles": dict(zip(("p10", "p25", "p50", "p75", "p90"), map(float, quantiles))),
        "histogram": np.histogram(values, bins=10, range=(0, 1))[0].tolist(),
        "frac_mostly_outside": float((values < 0.5).mean()),
        "mean_head_area": float(area.mean()),
        "mean_enrichment": float((values / np.maximum(area[ok], 1e-6)).mean()),  # > 1: denser on the head
        "mean_inside_tumor": float(values[labels == 1].mean()) if (labels == 1).any() else None,
        "mean_inside_healthy": float(values[labels == 0].mean()) if (labels == 0).any() else None,
    }  # fmt: skip


def evaluate_robustness(
    model: Any,
    processor: Any,
    files: Sequence[str | os.PathLike],
    labels: Sequence[int],
    *,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    tta: bool = False,
    batch_size: int = 32,
    cam_samples: int = 64,
    perturbations: dict[str, Callable] | None = None,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Honest yardstick and shortcut check for a one-logit tumour classifier on labelled files.

    ``groups`` names each file's class (defaults to its parent folder: glioma, meningioma, ..., notumor); the
    source is the file-name prefix (`source_of`). Perturbations (default `PERTURBATIONS`) are applied to the
    decoded image before the processor. Returns keys ``n, threshold, skipped, metrics, metrics_tta (None
    without tta), per_class, per_source, perturbations, grad_cam``; metrics carry 95% bootstrap CIs. With
    ``output_dir``, also writes ``robustness.json`` and ``robustness.md`` there.
    """
    if len(files) != len(labels):
        raise ValueError(f"files and labels must have the same length, got {len(files)} and {len(labels)}")
    if groups is not None and len(groups) != len(files):
        raise ValueError(f"groups must name one class per file, got {len(groups)} for {len(files)} files")
    groups = list(groups) if groups is not None else [Path(f).parent.name for f in files]
    threshold = float(getattr(model.config, "threshold", 0.5))
    perturbations = PERTURBATIONS if perturbations is None else perturbations
    images, kept, skipped = _load(files, int(getattr(processor, "max_pixels", DEFAULT_MAX_PIXELS)))
    if not images:
        raise ValueError(f"none of the {len(files)} files could be read")
    y = np.asarray(labels, dtype=np.int64)[kept]
    extra_flip = tta and "hflip" not in perturbations
    bar = tqdm(
        total=-(-len(images) // batch_size) * (1 + len(perturbations) + extra_flip), desc="scoring", unit="batch"
    )
    clean, keys = score_images(model, processor, images, None, batch_size, "clean", bar)
    ok = np.isfinite(clean)
    if not ok.all():
        skipped += [f"{files[kept[i]]}: preprocessing failed" for i in np.flatnonzero(~ok)]
        keep = np.flatnonzero(ok)
        images, kept, y, clean = [images[i] for i in keep], [kept[i] for i in keep], y[keep], clean[keep]
        keys = [keys[i] for i in keep]
    result: dict[str, Any] = {"n": len(kept), "threshold": threshold, "skipped": skipped, "n_boot": n_boot}
    result["metrics"] = _with_ci(clean, y, threshold, n_boot)
    clean_auc = result["metrics"]["roc_auc"]["value"]
    scored = {}
    for name, fn in perturbations.items():
        scored[name] = score_images(model, processor, images, fn, batch_size, name, bar, (keys, clean))[0]
    if extra_flip:
        scored["hflip"] = score_images(model, processor, images, hflip, batch_size, "hflip", bar, (keys, clean))[0]
    bar.close()
    rows = {name: _perturbation_row(p, clean, y, threshold, clean_auc) for name, p in scored.items()}
    result["perturbations"] = {name: rows[name] for name in perturbations}
    result["metrics_tta"] = None
    if tta:
        flipped = scored["hflip"]
        averaged = np.where(np.isfinite(flipped), (clean + flipped) / 2, clean)
        result["metrics_tta"] = _with_ci(averaged, y, threshold, n_boot)
    result["per_class"] = _per_class([groups[i] for i in kept], clean, y, threshold, n_boot)
    result["per_source"] = _per_source([source_of(files[i]) for i in kept], clean, y, threshold)
    result["grad_cam"] = None
    if cam_samples > 0 and hasattr(model, "grad_cam"):
        pick = np.sort(np.random.default_rng(seed).choice(len(images), min(cam_samples, len(images)), replace=False))
        targets = (clean[pick] >= threshold).astype(int)  # explain the class the model predicts
        inside, area = cam_inside_head(model, processor, [images[i] for i in pick], targets, batch_size)
        result["grad_cam"] = _cam_summary(inside, area, y[pick])
    if output_dir is not None:
        write_robustness_report(result, output_dir)
    return result


def write_robustness_report(result: dict[str, Any], output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``robustness.json`` (NaN as null) and ``robustness.md`` into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_results_json(result, out / "robustness.json")
    md_path = out / "robustness.md"
    md_path.write_text(render_markdown(result), encoding="utf-8")
    logger.info("Wrote %s", md_path)
    return json_path, md_path


def read_split(
    splits_csv: str | os.PathLike, data_dir: str | os.PathLike, split: str = "test"
) -> tuple[list[Path], list[int]]:
    """Files and 0/1 labels of one split of a ``splits.csv`` (``path,label,split``, paths relative to data_dir)."""
    root = Path(data_dir)
    with open(splits_csv, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    if not rows:
        raise ValueError(f"{splits_csv}: no rows with split {split!r}; pick one of train, validation, test")
    files = [root / row["path"] for row in rows]
    missing = [str(f) for f in files if not f.is_file()]
    if len(missing) == len(files):
        raise FileNotFoundError(f"none of the {len(files)} {split} files of {splits_csv} exist under {root}; "
                                "pass the --data_dir the model was trained on")  # fmt: skip
    if missing:
        logger.warning("%d of %d %s files are missing under %s, e.g. %s", len(missing), len(files), split, root,
                       missing[0])  # fmt: skip
    return files, [int(row["label"]) for row in rows]


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_cell, value)) + "]"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _table(first: str, rows: dict[str, dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """Markdown table: one row per key of ``rows``, one column per key of the row dicts (as in the JSON)."""
    body = [
        "| " + " | ".join(_cell(c) for c in [name, *(row.get(k) for k in columns)]) + " |" for name, row in rows.items()
    ]
    return ["| " + " | ".join([first, *columns]) + " |", "|" + " --- |" * (len(columns) + 1), *body]


_CLASS_COLUMNS = ("n", "metric", "value", "ci", "mean_p_tumor", "roc_auc_vs_healthy")
_SOURCE_COLUMNS = ("n", "n_tumor", "n_healthy", "accuracy", "sensitivity", "specificity", "roc_auc")
_PERTURBATION_COLUMNS = ("roc_auc", "auc_drop", "accuracy", "sensitivity", "specificity", "mean_abs_dp", "mean_dp",
                         "flip_rate")  # fmt: skip
_CAM_COLUMNS = ("n", "mean_inside", "p10", "p50", "p90", "frac_mostly_outside", "mean_head_area", "mean_enrichment",
                "mean_inside_tumor", "mean_inside_healthy")  # fmt: skip


def render_markdown(result: dict[str, Any]) -> str:
    """Markdown tables of an `evaluate_robustness` result: headline, per-class, per-source, perturbations, CAM."""
    m, tta = result["metrics"], result.get("metrics_tta")
    headline = {k: {"value": m[k]["value"], "ci": m[k]["ci"]} for k in METRIC_NAMES}
    for k in METRIC_NAMES if tta else ():
        headline[k].update(tta_value=tta[k]["value"], tta_ci=tta[k]["ci"])
    lines = [f"## Headline (n = {result['n']}, threshold {result['threshold']:.3g}, 95% percentile bootstrap CI)", ""]
    lines += _table("metric", headline, ("value", "ci", "tta_value", "tta_ci") if tta else ("value", "ci"))
    lines += ["", f"Confusion matrix [[tn, fp], [fn, tp]]: {m['confusion_matrix']}; {len(result['skipped'])} skipped"]
    lines += ["", "## Per class (source folder)", "", *_table("class", result["per_class"], _CLASS_COLUMNS)]
    lines += ["", "## Per source (file-name prefix)", "", *_table("source", result["per_source"], _SOURCE_COLUMNS)]
    lines += ["", f"## Perturbations before the processor (clean ROC-AUC {_cell(m['roc_auc']['value'])}, "
              f"accuracy {_cell(m['accuracy']['value'])}; dP = P(perturbed) - P(clean))", ""]  # fmt: skip
    lines += _table("perturbation", result["perturbations"], _PERTURBATION_COLUMNS)
    cam = result.get("grad_cam")
    if cam and "quantiles" in cam:
        lines += ["", "## Grad-CAM cue check (share of the predicted class's CAM energy inside the head mask)", ""]
        lines += _table("grad_cam", {"all": {**cam, **cam["quantiles"]}}, _CAM_COLUMNS)
        lines += [
            "",
            "mean_head_area: share of the processed image inside the head (what a uniform CAM would score); "
            "mean_enrichment: mean of inside / head area (> 1: the CAM concentrates on the head).",
        ]
    return "\n".join(lines) + "\n"
