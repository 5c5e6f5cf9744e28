"""Duplicate grouping, the duplicate policy and group-aware stratified splitting (pure numpy, no files)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_mri.dedup import (
    find_duplicate_groups,
    grouped_stratified_split,
    hamming_pairs,
    image_fingerprint,
    resolve_duplicate_groups,
    split_targets,
)

SPLITS_70 = {"train": 0.70, "validation": 0.15, "test": 0.15}
SPLITS_80 = {"train": 0.80, "validation": 0.10, "test": 0.10}


def _brute_pairs(hashes: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    bits = np.unpackbits(hashes.view(np.uint8), axis=1)
    return {
        (i, j)
        for i in range(len(bits))
        for j in range(i + 1, len(bits))
        if int((bits[i] != bits[j]).sum()) <= max_distance
    }


@pytest.mark.parametrize("max_distance", [0, 3, 120, 128])
def test_hamming_pairs_match_brute_force(max_distance):
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(70, 4), dtype=np.uint64)
    hashes[5] = hashes[3]  # identical
    hashes[9] = hashes[3] ^ np.uint64(0b111)  # 3 bits away
    first, second = hamming_pairs(hashes, max_distance, chunk=16)
    assert set(zip(first.tolist(), second.tolist())) == _brute_pairs(hashes, max_distance)


def test_groups_are_transitive_and_numbered_by_first_member():
    base = np.zeros((5, 4), dtype=np.uint64)
    base[1, 0] = np.uint64(0b11)  # 2 bits from 0
    base[2, 0] = np.uint64(0b1111)  # 2 bits from 1, 4 from 0: joins by chaining
    base[3] = np.uint64(2**64 - 1)  # far from everything
    base[4] = base[3]
    exact = ["a", "b", "c", "d", "e"]
    assert find_duplicate_groups(exact, base, 2).tolist() == [0, 0, 0, 1, 1]
    assert find_duplicate_groups(exact, base, None).tolist() == [0, 1, 2, 3, 4]  # exact hashes all differ
    assert find_duplicate_groups(["a", "b", "a", "c", "b"], None, None).tolist() == [0, 1, 0, 2, 1]


def test_fingerprint_exact_and_perceptual():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    exact, phash = image_fingerprint(gray)
    assert phash.dtype == np.uint64 and phash.shape == (4,)
    assert image_fingerprint(gray.copy())[0] == exact
    assert image_fingerprint(np.clip(gray.astype(int) + 1, 0, 255).astype(np.uint8))[0] != exact


@pytest.mark.parametrize(
    ("counts", "sizes"),
    [([10, 10], [14, 3, 3]), ([7, 13], [14, 3, 3]), ([1, 40], [29, 6, 6]), ([3, 3], [2, 2, 2]), ([5, 0], [3, 1, 1])],
)
def test_split_targets_controlled_rounding(counts, sizes):
    table = split_targets(counts, sizes)
    assert table.sum(axis=1).tolist() == counts
    assert table.sum(axis=0).tolist() == sizes
    ideal = np.outer(counts, sizes) / sum(counts)
    assert np.all(np.abs(table - ideal) < 1)


@pytest.mark.parametrize("fractions", [SPLITS_70, SPLITS_80])
@pytest.mark.parametrize("n", [10, 20, 33, 57, 101, 1000])
@pytest.mark.parametrize("positive_rate", [0.21, 0.5])
def test_split_sizes_exact_without_groups(fractions, n, positive_rate):
    labels = (np.random.default_rng(n).random(n) < positive_rate).astype(int)
    split = grouped_stratified_split(labels, np.arange(n), fractions, seed=42)
    for name in ("validation", "test"):
        assert (split == name).sum() == round(fractions[name] * n)
    assert (split == "train").sum() == n - round(fractions["validation"] * n) - round(fractions["test"] * n)
    for value in (0, 1):
        n_label = (labels == value).sum()
        for name in fractions:
            expected = n_label * (split == name).sum() / n
            assert abs(((split == name) & (labels == value)).sum() - expected) < 1


def test_split_keeps_groups_together_and_is_seeded():
    rng = np.random.default_rng(3)
    n = 600
    groups = np.sort(rng.integers(0, 380, n))  # many singletons, some groups of 2-6
    labels = (groups % 5 == 0).astype(int)  # one label per group
    first = grouped_stratified_split(labels, groups, SPLITS_70, seed=7)
    assert np.array_equal(first, grouped_stratified_split(labels, groups, SPLITS_70, seed=7))
    assert not np.array_equal(first, grouped_stratified_split(labels, groups, SPLITS_70, seed=8))
    for group in np.unique(groups):
        assert len(set(first[groups == group])) == 1
    for name, fraction in SPLITS_70.items():
        assert abs((first == name).sum() - fraction * n) <= 6  # the greedy lands within one group size


def test_resolve_policy_conflicts_leaks_and_exact_copies():
    # group 0: exact pair + near copy (kept together); group 1: label tie -> dropped; group 2: majority 2:1;
    # group 3: a test image and its training copy -> training copy dropped; group 4: singleton.
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4])
    exact = ["a", "a", "b", "c", "c", "d", "e", "f", "g", "g", "h"]
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0])
    is_test = [False] * 8 + [True, False, False]
    names = [f"img{i}" for i in range(11)]
    keep, stats = resolve_duplicate_groups(groups, exact, labels, is_test, names)
    assert keep.tolist() == [1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1]
    assert stats["exact_duplicates_removed"] == 1 and stats["exact_duplicate_groups"] == 1
    assert stats["conflicting_images_dropped"] == 3 and len(stats["label_conflicts"]) == 2
    assert stats["test_leaks_removed"] == ["img9"]
    assert stats["near_duplicate_groups"] == 2 and stats["near_duplicate_images"] == 4  # groups 0 and 2
