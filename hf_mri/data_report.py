"""DataReport: what loading found, dropped and produced, saved as data_report.json and splits.csv."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict

__all__ = ["LABEL_NAMES", "DataReport", "save_report", "write_splits_csv"]

LABEL_NAMES = ["no_tumor", "tumor"]


@dataclass
class DataReport:
    """What `load_splits` found, dropped and produced; `to_dict()` is what `data_report.json` holds."""

    data_dir: str
    layout: str  # "flat" (<root>/<class>/) or "predefined" (<root>/{Training,Testing}/<class>/)
    seed: int
    val_fraction: float
    test_fraction: float
    dedupe: bool
    near_duplicate_distance: int | None
    label_mapping: dict[str, int]
    label_names: list[str] = field(default_factory=lambda: list(LABEL_NAMES))
    files_found: int = 0
    images_valid: int = 0
    images_kept: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    exact_duplicate_groups: int = 0
    exact_duplicates_removed: int = 0
    near_duplicate_groups: int = 0
    near_duplicate_images: int = 0
    conflicting_images_dropped: int = 0
    label_conflicts: list[dict[str, Any]] = field(default_factory=list)
    test_leaks_removed: list[str] = field(default_factory=list)
    duplicate_groups: list[dict[str, Any]] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: list[tuple[str, int, str]] = field(default_factory=list, repr=False)  # (path, label, split) -> csv

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("rows")
        return data

    def summary(self) -> str:
        sizes = ", ".join(f"{split} {sum(c.values())} {c}" for split, c in self.label_counts.items())
        return (
            f"{self.data_dir}: {self.files_found} image files, {len(self.skipped)} skipped, "
            f"{self.exact_duplicates_removed} exact duplicates removed ({self.exact_duplicate_groups} groups), "
            f"{self.near_duplicate_groups} near-duplicate groups ({self.near_duplicate_images} images) kept within "
            f"one split, {self.conflicting_images_dropped} dropped for conflicting labels, "
            f"{len(self.test_leaks_removed)} training copies of test images dropped; {sizes}"
        )


def write_splits_csv(source: DataReport | DatasetDict, path: str | os.PathLike, root: str | None = None) -> Path:
    """Write `path,label,split` rows (labels 0/1) to a CSV file, from a report (paths relative to its `data_dir`)
    or from the splits themselves (their `path` column, made relative to `root` when given)."""
    if isinstance(source, DataReport):
        rows = source.rows
    else:
        rows = [
            (Path(os.path.relpath(p, root)).as_posix() if root else p, int(y), name)
            for name, part in source.items()
            for p, y in zip(part["path"], part["label"])
        ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "label", "split"), *sorted(rows, key=lambda r: (r[2], r[0]))])
    return path


def save_report(
    report: DataReport, splits_or_dir: DatasetDict | str | os.PathLike, out_dir: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """Write `data_report.json` and `splits.csv` into a folder: `save_report(report, out_dir)`, or
    `save_report(report, splits, out_dir)` to take the rows from the (possibly filtered) splits."""
    if out_dir is None:
        source, out_dir = report, Path(splits_or_dir)
    else:
        source, out_dir = splits_or_dir, Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "data_report.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return json_path, write_splits_csv(source, out_dir / "splits.csv", root=report.data_dir)
