"""load_splits: odd files, exact counts in the report, exact stratified splits, layouts, errors, transforms."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pydicom.data  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

from hf_mri.data import (  # noqa: E402
    LABEL_NAMES,
    SAMPLE_DATA_DIR,
    DataReport,
    MriDataError,
    load_splits,
    save_report,
    with_transforms,
)
from hf_mri.image_processing_mri_vgg import MriVggImageProcessor  # noqa: E402

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-mri-dev"


def make_image(seed: int, size: int = 72) -> Image.Image:
    """A smooth random pattern: images from different seeds are ~128 of 256 perceptual-hash bits apart."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    noisy = np.asarray(base).astype(int) + rng.integers(-12, 13, (size, size))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def make_folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    for k, (class_name, n) in enumerate(counts.items()):
        for i in range(n):
            write(root / class_name / f"img_{i:03d}.png", make_image(seed + 1000 * k + i))
    return root


def splits_csv(report_dir: Path) -> list[dict[str, str]]:
    with open(report_dir / "splits.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd")
    seeds = iter(range(100, 200))
    for i in range(6):
        write(root / "notumor" / f"n{i}.png", make_image(next(seeds)))
    for i in range(6):
        write(root / "glioma" / f"g{i}.png", make_image(next(seeds)))
    # every format, mode and extension case
    write(root / "notumor" / "upper.JPG", make_image(next(seeds)).convert("RGB"), format="JPEG", quality=95)
    write(root / "notumor" / "bitmap.bmp", make_image(next(seeds)))
    write(root / "Normal" / "palette.png", make_image(next(seeds)).convert("P"))  # 2nd healthy folder, odd case
    sixteen = (np.asarray(make_image(next(seeds)), dtype=np.uint16) * 257).astype(np.uint16)
    write(root / "Normal" / "sixteen.png", Image.fromarray(sixteen))
    rgba = make_image(next(seeds)).convert("RGBA")
    rgba.putalpha(200)
    write(root / "glioma" / "alpha.PNG", rgba)
    write(root / "glioma" / "photo.jpeg", make_image(next(seeds)), quality=95)
    write(root / "Pituitary" / "scan.tif", make_image(next(seeds)))
    write(root / "Pituitary" / "scan2.TIFF", make_image(next(seeds)))
    shutil.copyfile(pydicom.data.get_testdata_file("CT_small.dcm"), root / "Pituitary" / "ct.dcm")
    shutil.copyfile(pydicom.data.get_testdata_file("MR_small.dcm"), root / "glioma" / "mr.DCM")
    # duplicates: exact (same pixels in another format), near (resized + JPEG; brighter), conflicting labels
    write(root / "notumor" / "n0_copy.bmp", Image.open(root / "notumor" / "n0.png"))
    shutil.copyfile(root / "notumor" / "n0.png", root / "notumor" / "n0_copy2.png")
    shutil.copyfile(root / "glioma" / "g0.png", root / "glioma" / "g0_copy.png")
    write(root / "notumor" / "n1_small.jpg", make_image(101).resize((60, 60)), quality=90)
    write(
        root / "glioma" / "g1_bright.png", ImageEnhance.Brightness(Image.open(root / "glioma" / "g1.png")).enhance(1.1)
    )
    conflict = make_image(next(seeds))
    write(root / "notumor" / "conflict.png", conflict)
    write(root / "glioma" / "conflict.png", conflict)
    # unreadable: truncated JPEG, zero bytes, text named .jpg, too small, outside any class folder
    write(root / "glioma" / "full.jpg", make_image(next(seeds), size=128), quality=95)
    data = (root / "glioma" / "full.jpg").read_bytes()
    (root / "glioma" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "glioma" / "full.jpg").unlink()
    (root / "notumor" / "empty.png").write_bytes(b"")
    (root / "glioma" / "fake.jpg").write_text("not an image")
    write(root / "Pituitary" / "tiny.png", make_image(next(seeds), size=16))
    write(root / "stray.png", make_image(next(seeds)))
    # junk: ignored (listed) and hidden (silent)
    (root / "README.txt").write_text("notes")
    (root / "notumor" / "notes.txt").write_text("notes")
    (root / "notumor" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "notumor" / ".DS_Store").write_bytes(b"\0" * 10)
    write(root / "glioma" / ".ipynb_checkpoints" / "g0-checkpoint.png", make_image(1))
    write(root / "__MACOSX" / "glioma" / "._g0.png", make_image(2))
    write(root / ".hidden" / "h.png", make_image(3))
    return root


def test_odd_folder_loads_with_exact_report(odd_folder, tmp_path):
    splits, report = load_splits(odd_folder, report_dir=tmp_path, seed=0)
    assert report.label_mapping == {"Normal": 0, "Pituitary": 1, "glioma": 1, "notumor": 0}
    assert report.files_found == 34  # 29 readable + 5 unusable
    assert {s["path"]: s["reason"].split(" ")[0] for s in report.skipped} == {
        "stray.png": "not",
        "glioma/fake.jpg": "not",
        "glioma/truncated.jpg": "unreadable",
        "notumor/empty.png": "empty",
        "Pituitary/tiny.png": "image",
    }
    assert report.ignored == ["README.txt", "notumor/Thumbs.db", "notumor/notes.txt"]
    assert report.images_valid == 29
    assert (report.exact_duplicate_groups, report.exact_duplicates_removed) == (2, 3)
    assert (report.near_duplicate_groups, report.near_duplicate_images) == (2, 4)
    assert report.conflicting_images_dropped == 2 and len(report.label_conflicts) == 1
    assert report.images_kept == 29 - 3 - 2 == sum(len(part) for part in splits.values())
    paths = {Path(p).relative_to(odd_folder).as_posix() for part in splits.values() for p in part["path"]}
    assert {"glioma/mr.DCM", "Pituitary/ct.dcm", "Normal/sixteen.png", "glioma/alpha.PNG"} <= paths
    assert not any("copy" in p or "conflict" in p or "/." in p or "MACOSX" in p for p in paths)
    split_of = {Path(p).name: name for name, part in splits.items() for p in part["path"]}
    assert split_of["n1.png"] == split_of["n1_small.jpg"] and split_of["g1.png"] == split_of["g1_bright.png"]
    saved = json.loads((tmp_path / "data_report.json").read_text())
    assert saved["exact_duplicates_removed"] == 3 and saved["label_mapping"]["Normal"] == 0
    rows = splits_csv(tmp_path)
    assert len(rows) == report.images_kept and set(rows[0]) == {"path", "label", "split"}


def test_dataset_columns_and_features(odd_folder):
    splits, _ = load_splits(odd_folder, seed=0)
    assert list(splits) == ["train", "validation", "test"]
    features = splits["train"].features
    assert list(features) == ["image", "label", "path"]
    assert features["label"].names == LABEL_NAMES and features["image"].decode is False
    row = splits["train"][0]
    assert row["image"]["path"] == row["path"] and Path(row["path"]).is_absolute()


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("plain"), {"no": 19, "yes": 38})


@pytest.mark.parametrize(("val_fraction", "test_fraction"), [(0.15, 0.15), (0.1, 0.1), (0.2, 0.0)])
@pytest.mark.parametrize("n_keep", [57, 40, 23])
def test_split_sizes_exact_and_stratified(plain_folder, tmp_path, val_fraction, test_fraction, n_keep):
    root = tmp_path / "data"
    shutil.copytree(plain_folder, root)
    for path in sorted((root / "yes").iterdir())[n_keep - 19 :]:
        path.unlink()
    splits, report = load_splits(root, val_fraction=val_fraction, test_fraction=test_fraction, report_dir=tmp_path)
    n = report.images_kept
    assert n == n_keep and report.exact_duplicates_removed == report.near_duplicate_groups == 0
    sizes = {name: len(part) for name, part in splits.items()}
    assert sizes["test"] == round(test_fraction * n) and sizes["validation"] == round(val_fraction * n)
    assert sizes["train"] == n - sizes["test"] - sizes["validation"]
    n_neg = 19
    for name, part in splits.items():
        negatives = int(np.sum(np.asarray(part["label"]) == 0))
        assert abs(negatives - n_neg * sizes[name] / n) < 1, (name, negatives)
    all_paths = [p for part in splits.values() for p in part["path"]]
    assert len(all_paths) == len(set(all_paths)) == n
    assert sorted(r["split"] for r in splits_csv(tmp_path)) == sorted(
        name for name, part in splits.items() for _ in range(len(part))
    )


def test_same_seed_same_split_other_seed_differs(plain_folder, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(plain_folder, moved)  # another location: the split depends on relative paths only
    first = save_report(load_splits(plain_folder, seed=3)[1], tmp_path / "a")[1].read_text()
    again = save_report(load_splits(moved, seed=3)[1], tmp_path / "b")[1].read_text()
    other = save_report(load_splits(plain_folder, seed=4)[1], tmp_path / "c")[1].read_text()
    assert first == again and first != other
    splits, report = load_splits(plain_folder, seed=3)
    assert save_report(report, splits, tmp_path / "d")[1].read_text() == first  # rows from the splits


@pytest.mark.parametrize(("train_dir", "test_dir"), [("Training", "Testing"), ("train", "test"), ("TRAIN", "Test")])
def test_predefined_layout_keeps_its_test_split(tmp_path, train_dir, test_dir):
    root = tmp_path / "data"
    make_folder(root / train_dir, {"notumor": 12, "glioma": 20}, seed=0)
    make_folder(root / test_dir, {"notumor": 4, "glioma": 6}, seed=50_000)
    shutil.copyfile(root / test_dir / "glioma" / "img_000.png", root / train_dir / "glioma" / "leak.png")
    splits, report = load_splits(root, val_fraction=0.25, test_fraction=0.15)
    assert report.layout == "predefined"
    assert report.test_leaks_removed == [f"{train_dir}/glioma/leak.png"]
    test_paths = sorted(Path(p).relative_to(root).as_posix() for p in splits["test"]["path"])
    assert test_paths == sorted(p.relative_to(root).as_posix() for p in (root / test_dir).rglob("*.png"))
    assert len(splits["validation"]) == round(0.25 * 32) and len(splits["train"]) == 32 - 8
    assert report.class_counts["test"] == {"glioma": 6, "notumor": 4}


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ({"notumor": 3, "glioma": 3, "empty_class": 0}, "empty_class"),
        ({"glioma": 3, "pituitary": 3}, "labelled 'tumor'"),
        ({"notumor": 4}, "labelled 'no_tumor'"),
        ({}, "no readable images"),
    ],
)
def test_unusable_folders_raise_clear_errors(tmp_path, layout, match):
    root = make_folder(tmp_path / "data", layout)
    for class_name in layout:
        (root / class_name).mkdir(parents=True, exist_ok=True)
    root.mkdir(exist_ok=True)
    with pytest.raises(MriDataError, match=match) as info:
        load_splits(root)
    assert str(root) in str(info.value) and isinstance(info.value, ValueError)


def test_negative_classes_are_configurable(plain_folder):
    _, report = load_splits(plain_folder, negative_classes=("YES",))
    assert report.label_mapping == {"no": 1, "yes": 0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"val_fraction": 1.2}, "val_fraction"), ({"test_fraction": -0.1}, "test_fraction"),
     ({"val_fraction": 0.5, "test_fraction": 0.5}, "< 1"), ({"near_duplicate_distance": -1}, "near_duplicate")],
)  # fmt: skip
def test_bad_arguments_raise(plain_folder, kwargs, match):
    with pytest.raises(MriDataError, match=match):
        load_splits(plain_folder, **kwargs)


def test_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(MriDataError, match="does not exist"):
        load_splits(tmp_path / "nope")


def test_dedupe_off_keeps_every_readable_file(odd_folder):
    splits, report = load_splits(odd_folder, dedupe=False)
    assert report.images_kept == report.images_valid == 29 and report.exact_duplicates_removed == 0


def test_with_transforms_gives_model_inputs_and_survives_a_vanished_file(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(SAMPLE_DATA_DIR, root)
    splits, _ = load_splits(root)
    ready = with_transforms(splits, MriVggImageProcessor(image_size=64))
    item = ready["validation"][0]
    assert set(item) == {"pixel_values", "labels"}
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].dtype == torch.float32
    assert item["labels"].dtype == torch.float32 and float(item["labels"]) in (0.0, 1.0)
    batch = next(iter(torch.utils.data.DataLoader(ready["train"], batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and batch["labels"].shape == (4,)
    Path(splits["test"][0]["path"]).unlink()  # it passed the up-front check, then vanished
    replaced = ready["test"][0]
    assert torch.equal(replaced["pixel_values"], ready["test"][1]["pixel_values"])


def test_sample_data_is_bundled_clean_and_small():
    files = [p for p in SAMPLE_DATA_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert (SAMPLE_DATA_DIR / "ATTRIBUTION.md").is_file()
    splits, report = load_splits(SAMPLE_DATA_DIR)
    assert report.images_kept == 60 and not report.skipped and report.duplicate_groups == []
    assert {k: sum(v.values()) for k, v in report.class_counts.items()} == {"train": 42, "validation": 9, "test": 9}


def test_real_data_splits_and_duplicates(tmp_path):
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} not present")
    splits, report = load_splits(REAL_DATA, report_dir=tmp_path)
    assert isinstance(report, DataReport) and report.files_found == report.images_valid
    assert report.exact_duplicates_removed > 0 and report.near_duplicate_groups > 0
    split_of = {Path(p).relative_to(REAL_DATA).as_posix(): name for name, part in splits.items() for p in part["path"]}
    for group in report.duplicate_groups:
        assert len({split_of[p] for p in group["kept"]}) == 1
        assert not any(p in split_of for p in group["removed"])
    n = report.images_kept
    assert len(splits["test"]) == round(0.15 * n) and len(splits["validation"]) == round(0.15 * n)
    print(
        f"\nbrain-mri-dev: {report.files_found} files, {report.exact_duplicates_removed} exact duplicates removed "
        f"in {report.exact_duplicate_groups} groups, {report.near_duplicate_groups} near-duplicate groups "
        f"({report.near_duplicate_images} images), {report.conflicting_images_dropped} conflicts, "
        f"splits {report.label_counts}"
    )


def test_hub_dataset_is_exported_then_loaded_like_a_folder(tmp_path, monkeypatch):
    import datasets

    import hf_mri.data as data_module

    def split(seeds: range) -> datasets.Dataset:
        features = datasets.Features(
            {"img": datasets.Image(), "label": datasets.ClassLabel(names=["glioma", "notumor"])}
        )
        rows = {"img": [make_image(s) for s in seeds], "label": [i % 2 for i in range(len(seeds))]}
        return datasets.Dataset.from_dict(rows, features=features)

    hub = datasets.DatasetDict({"train": split(range(300, 330)), "test": split(range(400, 410))})
    real_load = data_module.load_dataset
    monkeypatch.setattr(
        data_module, "load_dataset", lambda name, **kw: hub if name == "someone/mri" else real_load(name, **kw)
    )
    splits, report = load_splits("someone/mri", cache_dir=tmp_path)
    assert report.layout == "predefined" and report.label_mapping == {"glioma": 1, "notumor": 0}
    assert len(splits["test"]) == 10 and len(splits["train"]) + len(splits["validation"]) == 30
    assert (tmp_path / "hf_mri_exports" / "someone--mri" / ".complete").is_file()
