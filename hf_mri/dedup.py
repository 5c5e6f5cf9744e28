"""Duplicate detection (exact pixel hash + perceptual hash) and group-aware, stratified splitting."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import imagehash
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .image_processing_mri_vgg import DEFAULT_MAX_PIXELS, MriImageError, load_image, to_grayscale_uint8

__all__ = [
    "PHASH_SIZE",
    "find_duplicate_groups",
    "fingerprint_files",
    "grouped_stratified_split",
    "hamming_pairs",
    "image_fingerprint",
    "resolve_duplicate_groups",
    "split_targets",
]

PHASH_SIZE = 16  # 16x16 = 256-bit DCT hash: 64-bit hashes confuse dim, similar-looking MRI of other patients


def image_fingerprint(gray: np.ndarray) -> tuple[str, np.ndarray]:
    """Grayscale uint8 (H, W) -> (exact hash of the decoded pixels, perceptual hash as 4 uint64 words)."""
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    exact = hashlib.sha1(f"{gray.shape}".encode() + gray.tobytes()).hexdigest()
    bits = imagehash.phash(Image.fromarray(gray), hash_size=PHASH_SIZE).hash
    return exact, np.packbits(bits.ravel()).view(np.uint64).copy()


def _fingerprint_file(path: str | os.PathLike, max_pixels: int) -> tuple[str, np.ndarray] | str:
    try:
        return image_fingerprint(to_grayscale_uint8(load_image(path, max_pixels)))
    except Exception as err:  # any failure makes this one file unusable, never the run
        if isinstance(err, MriImageError):
            return str(err).removeprefix(f"{path}: ")
        return f"{type(err).__name__}: {err}"


def fingerprint_files(
    paths: Sequence[str | os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS, num_workers: int | None = None
) -> list[tuple[str, np.ndarray] | str]:
    """The validation pass: decode every file once through `load_image` (threads, tqdm bar) and return its
    `image_fingerprint`, or the reason (a string) the file cannot be used."""
    workers = num_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda path: _fingerprint_file(path, max_pixels), paths)
        return list(tqdm(results, total=len(paths), desc="Checking images", unit="img"))


def _popcount(words: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words)
    return np.unpackbits(words[..., None].view(np.uint8), axis=-1).sum(axis=-1, dtype=np.uint8)


def hamming_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) of rows of `hashes` (N, W) uint64 within `max_distance` bits: a (chunk, N) distance
    block at a time, one uint64 word at a time, so memory stays O(chunk * N)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    if hashes.ndim == 1:
        hashes = hashes[:, None]
    columns = np.ascontiguousarray(hashes.T)
    firsts, seconds = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        distance = np.zeros((len(block), len(hashes)), dtype=np.uint16)
        for word in range(hashes.shape[1]):
            distance += _popcount(block[:, word, None] ^ columns[word][None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        keep = cols > rows
        firsts.append(rows[keep].astype(np.int64))
        seconds.append(cols[keep].astype(np.int64))
    return np.concatenate(firsts), np.concatenate(seconds)


def find_duplicate_groups(
    exact_hashes: Sequence[str], perceptual_hashes: np.ndarray | None, max_distance: int | None
) -> np.ndarray:
    """Group ids (N,) such that identical images, and images within `max_distance` bits, share a group.

    Near-duplicate pairs are merged transitively (union-find), so a chain of near-copies forms one group.
    With `max_distance=None` only exact duplicates are grouped. Group ids are numbered in order of the first
    member, so they are deterministic for a deterministic input order.
    """
    n = len(exact_hashes)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        root_i, root_j = find(i), find(j)
        if root_i != root_j:
            parent[max(root_i, root_j)] = min(root_i, root_j)

    first_of: dict[str, int] = {}
    representatives = []
    for index, key in enumerate(exact_hashes):
        if key in first_of:
            union(first_of[key], index)
        else:
            first_of[key] = index
            representatives.append(index)
    if max_distance is not None and perceptual_hashes is not None and len(representatives) > 1:
        reps = np.asarray(representatives)
        for a, b in zip(*hamming_pairs(np.asarray(perceptual_hashes)[reps], max_distance)):
            union(int(reps[a]), int(reps[b]))
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, group_ids = np.unique(roots, return_inverse=True)  # roots are min members, so ids follow first members
    return group_ids.astype(np.int64)


def resolve_duplicate_groups(
    groups: np.ndarray, exact_hashes: Sequence[str], labels: np.ndarray, is_test: Sequence[bool], names: Sequence[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the duplicate policy to each group; returns the keep mask and the report's duplicate fields.

    1. Conflicting labels: the members with the group's majority label stay, the others are dropped; a tie
       drops the whole group (nobody can tell which label is right).
    2. A group that holds images of a predefined test split loses its training members (they would leak).
    3. Exact copies (identical decoded pixels) collapse to the first one; what is left of the group is a
       near-duplicate group that the split keeps together.
    """
    keep = np.ones(len(groups), dtype=bool)
    stats: dict[str, Any] = dict.fromkeys(
        ("exact_duplicate_groups", "exact_duplicates_removed", "near_duplicate_groups", "near_duplicate_images",
         "conflicting_images_dropped"), 0
    )  # fmt: skip
    stats.update(label_conflicts=[], test_leaks_removed=[], duplicate_groups=[])
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, dtype=np.int64)
    for group in np.flatnonzero(sizes > 1):
        members = np.flatnonzero(groups == group)
        votes = Counter(labels[members].tolist()).most_common()
        if len(votes) > 1:
            dropped = members if votes[0][1] == votes[1][1] else members[labels[members] != votes[0][0]]
            keep[dropped] = False
            stats["conflicting_images_dropped"] += len(dropped)
            stats["label_conflicts"].append(
                {"paths": [names[i] for i in members], "labels": labels[members].tolist(),
                 "dropped": [names[i] for i in dropped]}
            )  # fmt: skip
        if any(is_test[i] for i in members if keep[i]):
            leaks = [i for i in members if keep[i] and not is_test[i]]
            keep[leaks] = False
            stats["test_leaks_removed"] += [names[i] for i in leaks]
        members = members[keep[members]]
        copies = Counter(exact_hashes[i] for i in members)
        first: dict[str, int] = {}
        for i in members:
            first.setdefault(exact_hashes[i], i)
        removed = [i for i in members if first[exact_hashes[i]] != i]
        keep[removed] = False
        stats["exact_duplicates_removed"] += len(removed)
        stats["exact_duplicate_groups"] += sum(1 for n in copies.values() if n > 1)
        if len(first) > 1:
            stats["near_duplicate_groups"] += 1
            stats["near_duplicate_images"] += len(first)
        if removed or len(first) > 1:
            stats["duplicate_groups"].append(
                {"kept": [names[i] for i in first.values()], "removed": [names[i] for i in removed]}
            )
    return keep, stats


def split_targets(label_counts: Sequence[int], split_sizes: Sequence[int]) -> np.ndarray:
    """Per-label, per-split sizes (K, S): row sums = label counts, column sums = split sizes, and every cell
    within one of its proportional share (controlled rounding of the table; brute force, K is tiny)."""
    counts = np.asarray(label_counts, dtype=np.int64)
    sizes = np.asarray(split_sizes, dtype=np.int64)
    if counts.sum() != sizes.sum():
        raise ValueError(f"label counts sum to {counts.sum()} but split sizes sum to {sizes.sum()}")
    total = max(int(counts.sum()), 1)
    ideal = counts[:, None] * sizes[None, :] / total
    base = np.floor(ideal + 1e-9).astype(np.int64)
    frac = ideal - base
    row_need = counts - base.sum(axis=1)
    col_need = sizes - base.sum(axis=0)
    num_splits = len(sizes)
    options = [list(itertools.combinations(range(num_splits), int(r))) for r in row_need]
    best, best_score = None, -1.0
    for choice in itertools.product(*options):
        extra = np.zeros_like(base)
        for row, cols in enumerate(choice):
            extra[row, list(cols)] = 1
        if np.array_equal(extra.sum(axis=0), col_need):
            score = float((frac * extra).sum())
            if score > best_score + 1e-12:
                best, best_score = extra, score
    if best is None:  # unreachable for consistent margins; keep a valid table anyway
        raise RuntimeError(f"no rounding of {ideal.tolist()} matches split sizes {sizes.tolist()}")
    return base + best


def grouped_stratified_split(
    labels: Sequence[int], groups: Sequence[int], fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Assign each item to a split name so that no group spans two splits, stratified by label.

    Split sizes are `round(fraction * n)` for every split but the first, which takes the rest; per-label
    targets come from `split_targets`. Without multi-image groups the sizes are met exactly. Groups are placed
    largest first (seeded random order among equal sizes) into a split with room for them, chosen at random in
    proportion to the room left; a group that fits nowhere goes where the most room is left.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    names = list(fractions)
    n = len(labels)
    sizes = [round(fractions[name] * n) for name in names[1:]]
    sizes = [n - sum(sizes), *sizes]
    if sizes[0] < 0:
        raise ValueError(f"fractions {dict(fractions)} leave no room for the {names[0]!r} split")
    label_values = sorted(set(labels.tolist()))
    targets = split_targets([int((labels == v).sum()) for v in label_values], sizes)
    rng = np.random.default_rng(seed)
    assignment = np.full(n, -1, dtype=np.int64)
    for row, value in enumerate(label_values):
        members = np.flatnonzero(labels == value)
        unit_ids, unit_sizes = np.unique(groups[members], return_counts=True)
        order = rng.permutation(len(unit_ids))
        order = order[np.argsort(-unit_sizes[order], kind="stable")]
        room = targets[row].astype(np.float64).copy()
        for unit in order:
            size = unit_sizes[unit]
            fits = room >= size
            if fits.any():
                weights = np.where(fits, room, 0.0)
                split = int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side="right"))
                split = min(split, len(names) - 1)
            else:
                split = int(np.argmax(room))
            room[split] -= size
            assignment[members[groups[members] == unit_ids[unit]]] = split
    return np.asarray(names, dtype=object)[assignment]
