"""Image folder -> binary labels -> validated, de-duplicated, stratified train/validation/test splits."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset
from datasets import Image as ImageFeature
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder
from tqdm.auto import tqdm

from .augment import with_transforms
from .data_report import LABEL_NAMES, DataReport, save_report, write_splits_csv
from .dedup import find_duplicate_groups, fingerprint_files, grouped_stratified_split, resolve_duplicate_groups
from .image_processing_mri_vgg import DEFAULT_MAX_PIXELS, DICOM_SUFFIXES

__all__ = [
    "DEFAULT_NEAR_DUPLICATE_DISTANCE",
    "LABEL_NAMES",
    "NEGATIVE_CLASSES",
    "SAMPLE_DATA_DIR",
    "DataReport",
    "MriDataError",
    "discover_files",
    "labelled_files",
    "load_splits",
    "save_report",
    "with_transforms",
    "write_splits_csv",
]

logger = logging.getLogger(__name__)

SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "sample_data"
NEGATIVE_CLASSES = ("no", "notumor", "no_tumor", "healthy", "normal")
# Bits out of the 256-bit perceptual hash. On brain-mri-dev, pairs up to 28 bits apart are re-encodes, resizes
# and adjacent slices of one scan, with no pair across tumour types; the first cross-type pairs appear at 32.
DEFAULT_NEAR_DUPLICATE_DISTANCE = 24
SPLIT_DIRS = {"train": "train", "training": "train", "test": "test", "testing": "test"}
SPLIT_DIRS.update(dict.fromkeys(("val", "valid", "validation", "dev"), "train"))  # pooled; we carve our own
IMAGE_SUFFIXES = frozenset(ImageFolder.EXTENSIONS) | DICOM_SUFFIXES
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


class MriDataError(ValueError):
    """The data folder cannot be used as a whole; the message names the folder and the fix."""


@dataclass
class _Entry:
    path: Path
    rel: str
    class_dir: str  # relative folder of the class, e.g. "Training/glioma"
    class_name: str
    given: str | None  # "train"/"test" from a predefined layout, else None


@contextlib.contextmanager
def _no_download_count_ping() -> Iterator[None]:
    """`load_dataset("imagefolder")` pings S3 to count downloads, even for a local folder: not from us."""
    import datasets.config

    saved, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = saved


def discover_files(root: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Image files under `root` (sorted) and the visible non-image files ignored (relative paths).

    Ordinary formats are listed by `datasets`' imagefolder builder (hidden files, dot-folders and `__*` folders
    such as `__MACOSX` are left out); DICOM (`.dcm`, `.dicom`), which imagefolder does not read, is added by a
    walk that follows the same rules.
    """
    root = Path(root).resolve()
    visible, dicom = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                (dicom if path.suffix.lower() in DICOM_SUFFIXES else visible).append(path)
    images: list[Path] = []
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in visible):
        features = Features({"image": ImageFeature(decode=False)})
        # An explicit "train" pattern: inferring splits from file names could silently drop files. Streaming
        # writes no Arrow cache; the throwaway cache_dir keeps its lock files out of the user's cache.
        with tempfile.TemporaryDirectory() as scratch, _no_download_count_ping():
            try:
                streamed = load_dataset(
                    "imagefolder", data_dir=str(root), data_files={"train": "**"}, streaming=True,
                    drop_labels=True, drop_metadata=True, features=features, cache_dir=scratch,
                )  # fmt: skip
                images = [Path(row["image"]["path"]) for row in streamed["train"] if row["image"].get("path")]
            except FileNotFoundError:  # nothing matched after all
                pass
    listed = set(images)
    ignored = sorted(p.relative_to(root).as_posix() for p in visible if p not in listed)
    return sorted(images + dicom, key=lambda p: p.relative_to(root).as_posix()), ignored


def _parse_layout(root: Path, files: list[Path]) -> tuple[str, list[_Entry], list[dict[str, str]], list[str]]:
    top = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))
    predefined = any(name.lower() in ("train", "training", "test", "testing") for name in top)
    if predefined and any(name.lower() not in SPLIT_DIRS for name in top):
        others = [name for name in top if name.lower() not in SPLIT_DIRS]
        raise MriDataError(
            f"{root}: mixes split folders with other folders {others}; use either <root>/<class>/ or "
            "<root>/{Training,Testing}/<class>/, and move or remove the others"
        )
    class_dirs = [
        f"{s}/{d.name}" if predefined else d.name
        for s in (top if predefined else [""])
        for d in sorted((root / s).iterdir())
        if d.is_dir() and not d.name.startswith((".", "__"))
    ]
    entries, outside = [], []
    for path in files:
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            outside.append({"path": str(path), "reason": "inside an archive: extract it into the folder first"})
            continue
        depth = 2 if predefined else 1
        if len(parts) <= depth:
            reason = f"not inside a class folder (expected {'<split>/' if predefined else ''}<class>/<image>)"
            outside.append({"path": "/".join(parts), "reason": reason})
            logger.warning("Skipping %s: %s", path, reason)
            continue
        given = SPLIT_DIRS[parts[0].lower()] if predefined else None
        entry = _Entry(path, "/".join(parts), "/".join(parts[:depth]), parts[depth - 1], given)
        entries.append(entry)
    return ("predefined" if predefined else "flat"), entries, outside, class_dirs


def labelled_files(
    data_dir: str | os.PathLike, negative_classes: Sequence[str] = NEGATIVE_CLASSES
) -> tuple[list[Path], list[int]]:
    """Every image file under `data_dir` (any layout, no split, no checks) with its 0/1 label from its folder."""
    root = _resolve_root(data_dir, None)
    files, _ = discover_files(root)
    _, entries, outside, _ = _parse_layout(root, files)
    for item in outside:
        logger.warning("Skipping %s: %s", item["path"], item["reason"])
    negatives = {name.lower() for name in negative_classes}
    return [e.path for e in entries], [int(e.class_name.lower() not in negatives) for e in entries]


def _check_classes(root: Path, class_dirs: list[str], entries: list[_Entry], mapping: dict[str, int]) -> None:
    counts = Counter(e.class_dir for e in entries)
    for class_dir in class_dirs:
        if not counts[class_dir]:
            raise MriDataError(f"class folder {root / class_dir} holds no readable images: add some or remove it")
    if not entries:
        raise MriDataError(
            f"{root} holds no readable images: expected <root>/<class>/<image> or "
            "<root>/{Training,Testing}/<class>/<image>, with a healthy and a tumour class folder"
        )
    training = [e for e in entries if e.given != "test"]
    for scope, members in (("", entries), (" (training folders)", training)):
        present = {mapping[e.class_name] for e in members}
        if len(present) < 2:
            only = LABEL_NAMES[present.pop()] if present else "none"
            raise MriDataError(
                f"{root}{scope}: every image is labelled {only!r} (folders -> labels {mapping}); training needs "
                "both classes. Add a healthy or tumour class folder, or pass negative_classes=... naming the "
                "healthy folder(s)"
            )


def load_splits(
    data_dir: str | os.PathLike | None,
    *,
    negative_classes: Sequence[str] = NEGATIVE_CLASSES,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    near_duplicate_distance: int | None = DEFAULT_NEAR_DUPLICATE_DISTANCE,
    dedupe: bool = True,
    report_dir: str | os.PathLike | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[DatasetDict, DataReport]:
    """Load an MRI image folder into clean, de-duplicated, stratified `train`/`validation`/`test` splits.

    Args:
        data_dir (`str` or `os.PathLike`): `<root>/<class>/...` or `<root>/{Training,Testing}/<class>/...` (split
            folder names case-insensitive; a given test folder is kept as the test split, a validation folder is
            pooled with training). Images: anything PIL reads plus DICOM. A Hub dataset id (`"user/name"`, with an
            image and a ClassLabel column) is exported to `cache_dir` once and loaded the same way. `None`: the
            bundled sample (`SAMPLE_DATA_DIR`).
        negative_classes (`Sequence[str]`, *optional*, defaults to `NEGATIVE_CLASSES`): class folder names
            (case-insensitive) labelled 0 `"no_tumor"`; every other class folder is 1 `"tumor"`.
        val_fraction / test_fraction (`float`, *optional*, defaults to 0.15): of all kept images; with a
            predefined test split, `test_fraction` is unused and validation takes `val_fraction` of training.
        seed (`int`, *optional*, defaults to 42): the split depends only on it and the relative paths.
        near_duplicate_distance (`int`, *optional*, defaults to 24): bits of the 256-bit perceptual hash within
            which two images are near-duplicates; `None` groups exact duplicates only.
        dedupe (`bool`, *optional*, defaults to `True`): `False` keeps every readable file as its own item.
        report_dir (`str`, *optional*): also write `data_report.json` and `splits.csv` there.
        max_pixels (`int`, *optional*): larger images are skipped (decompression-bomb guard).
        num_workers (`int`, *optional*): threads for the validation pass (default: CPU count, at most 8).
        cache_dir (`str`, *optional*): where a Hub dataset is downloaded and exported.

    Returns:
        `(DatasetDict, DataReport)`. Each split has `image` (`Image(decode=False)`, the file), `label`
        (`ClassLabel(names=["no_tumor", "tumor"])`) and `path` (absolute path), sorted by path.

    Raises:
        MriDataError: no images, an empty class folder, a single class, a mixed layout or bad fractions.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise MriDataError(f"{name} must be in [0, 1), got {value}")
    if near_duplicate_distance is not None and near_duplicate_distance < 0:
        raise MriDataError(f"near_duplicate_distance must be >= 0 or None, got {near_duplicate_distance}")
    root = _resolve_root(data_dir, cache_dir)
    files, ignored = discover_files(root)
    layout, entries, skipped, class_dirs = _parse_layout(root, files)
    given_test = any(e.given == "test" for e in entries)
    if not given_test and val_fraction + test_fraction >= 1.0:
        raise MriDataError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    if isinstance(negative_classes, str):
        negative_classes = negative_classes.split(",")
    negatives = {name.strip().lower() for name in negative_classes}
    mapping = {name: int(name.lower() not in negatives) for name in sorted({e.class_name for e in entries})}
    logger.info("Label mapping (folder -> label): %s", {k: LABEL_NAMES[v] for k, v in mapping.items()})
    _check_classes(root, class_dirs, entries, mapping)
    report = DataReport(
        str(root), layout, seed, val_fraction, test_fraction, dedupe, near_duplicate_distance, mapping,
        files_found=len(files), skipped=skipped, ignored=ignored,
    )  # fmt: skip

    results = fingerprint_files([e.path for e in entries], max_pixels, num_workers)
    for entry, result in zip(entries, results):
        if isinstance(result, str):
            report.skipped.append({"path": entry.rel, "reason": result})
            logger.warning("Skipping %s: %s", entry.path, result)
    good = [i for i, result in enumerate(results) if not isinstance(result, str)]
    entries, exact = [entries[i] for i in good], [results[i][0] for i in good]
    _check_classes(root, class_dirs, entries, mapping)
    report.images_valid = len(entries)
    labels = np.array([mapping[e.class_name] for e in entries], dtype=np.int64)
    groups, keep = np.arange(len(entries)), np.ones(len(entries), dtype=bool)
    if dedupe:
        groups = find_duplicate_groups(exact, np.stack([results[i][1] for i in good]), near_duplicate_distance)
        is_test = [e.given == "test" for e in entries]
        keep, stats = resolve_duplicate_groups(groups, exact, labels, is_test, [e.rel for e in entries])
        for key, value in stats.items():
            setattr(report, key, value)
    entries, labels, groups = [e for e, k in zip(entries, keep) if k], labels[keep], groups[keep]

    split = np.full(len(entries), "test", dtype=object)
    fractions = {"train": 1.0 - val_fraction, "validation": val_fraction}
    if not given_test:
        fractions = {"train": 1.0 - val_fraction - test_fraction, "validation": val_fraction, "test": test_fraction}
    pool = np.array([i for i, e in enumerate(entries) if e.given != "test"], dtype=np.int64)
    split[pool] = grouped_stratified_split(labels[pool], groups[pool], fractions, seed)
    report.images_kept = len(entries)
    report.rows = [(e.rel, int(y), str(s)) for e, y, s in zip(entries, labels, split)]
    for name in ("train", "validation", "test"):
        report.class_counts[name] = dict(
            sorted(Counter(e.class_name for e, s in zip(entries, split) if s == name).items())
        )
        report.label_counts[name] = {n: int(((split == name) & (labels == y)).sum()) for y, n in enumerate(LABEL_NAMES)}
    if not report.label_counts["train"]["tumor"] or not report.label_counts["train"]["no_tumor"]:
        raise MriDataError(f"{root}: too few images to put both classes in the training split; add more images")
    logger.info(report.summary())
    if report_dir is not None:
        save_report(report, report_dir)
    return _build(entries, labels, split), report


def _build(entries: list[_Entry], labels: np.ndarray, split: np.ndarray) -> DatasetDict:
    features = Features(
        {"image": ImageFeature(decode=False), "label": ClassLabel(names=LABEL_NAMES), "path": Value("string")}
    )
    parts = {}
    for name in ("train", "validation", "test"):
        paths = [str(e.path) for e, s in zip(entries, split) if s == name]
        columns = {"image": paths, "label": labels[split == name].tolist(), "path": paths}
        parts[name] = Dataset.from_dict(columns, features=features)
    return DatasetDict(parts)


def _resolve_root(data_dir: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        logger.info("No data_dir given: using the bundled sample %s", SAMPLE_DATA_DIR)
        return SAMPLE_DATA_DIR
    path = Path(data_dir).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise MriDataError(f"data_dir {path} is a file: pass the folder that holds one sub-folder per class")
    if isinstance(data_dir, str) and _HUB_ID.fullmatch(data_dir):
        return _export_hub_dataset(data_dir, cache_dir)
    raise MriDataError(f"data_dir {path} does not exist: pass an image folder or a Hub dataset id (user/name)")


def _export_hub_dataset(repo_id: str, cache_dir: str | os.PathLike | None) -> Path:
    """Write a Hub image-classification dataset once to `<cache>/hf_mri_exports/<id>/{Training,Testing}/<class>/`."""
    from datasets import config

    out = Path(cache_dir or config.HF_DATASETS_CACHE) / "hf_mri_exports" / repo_id.replace("/", "--")
    if (out / ".complete").is_file():
        return out
    try:
        loaded = load_dataset(repo_id, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as err:
        raise MriDataError(f"{repo_id!r} is neither a local folder nor a loadable Hub dataset ({err})") from err
    loaded = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    shutil.rmtree(out, ignore_errors=True)
    for split_name, part in loaded.items():
        image_col = next((k for k, f in part.features.items() if isinstance(f, ImageFeature)), None)
        label_col = next((k for k, f in part.features.items() if isinstance(f, ClassLabel)), None)
        if image_col is None or label_col is None:
            raise MriDataError(
                f"{repo_id} split {split_name!r} needs an Image and a ClassLabel column: {part.features}"
            )
        names = part.features[label_col].names
        folder = "Testing" if SPLIT_DIRS.get(split_name.lower()) == "test" else "Training"
        part = part.cast_column(image_col, ImageFeature(decode=False))
        for i, row in enumerate(tqdm(part, desc=f"Exporting {repo_id}/{split_name}", unit="img")):
            image, class_name = row[image_col], re.sub(r"[^\w.-]+", "_", names[row[label_col]])
            suffix = Path(image.get("path") or "").suffix.lower()
            target = out / folder / class_name / f"{split_name}-{i:06d}{suffix if suffix in IMAGE_SUFFIXES else '.png'}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if image.get("bytes") is not None:
                target.write_bytes(image["bytes"])  # PIL reads the content whatever the suffix says
            elif image.get("path"):
                shutil.copyfile(image["path"], target)
    (out / ".complete").write_text(repo_id)
    return out
