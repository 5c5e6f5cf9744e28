"""Metrics: hand-computed cases, threshold semantics, Trainer hook, threshold choice and bootstrap CIs."""

import math

import numpy as np
import pytest
from transformers import EvalPrediction

from hf_mri.metrics import (
    METRIC_NAMES,
    BinaryClassificationMetrics,
    bootstrap_ci,
    choose_threshold_for_sensitivity,
    compute_binary_metrics,
    make_compute_metrics,
)

# labels y, probabilities p; threshold 0.5 -> tn=3, fp=1, fn=2, tp=4
Y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
P = [0.1, 0.2, 0.3, 0.6, 0.4, 0.45, 0.7, 0.8, 0.9, 0.95]
EXPECTED = {
    "accuracy": 7 / 10,
    "precision": 4 / 5,
    "recall": 4 / 6,
    "specificity": 3 / 4,
    "f1": 2 * 4 / (2 * 4 + 1 + 2),
    # pairs (pos, neg) with pos > neg: 0.4,0.45 beat 3 negatives each; the other 4 beat all 4 -> 22/24
    "roc_auc": 22 / 24,
    "confusion_matrix": [[3, 1], [2, 4]],
}


def _random_data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return p, y


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))


def _assert_metrics(result: dict, expected: dict) -> None:
    assert result["confusion_matrix"] == expected["confusion_matrix"]
    for name in METRIC_NAMES:
        if math.isnan(expected[name]):
            assert math.isnan(result[name]), name
        else:
            assert result[name] == pytest.approx(expected[name]), name


def test_hand_computed_case():
    _assert_metrics(compute_binary_metrics(P, Y), EXPECTED)


def test_evaluate_metric_matches_wrapper_and_accumulates_batches():
    metric = BinaryClassificationMetrics()
    metric.add_batch(predictions=P[:4], references=Y[:4])
    metric.add_batch(predictions=P[4:], references=Y[4:])
    _assert_metrics(metric.compute(), EXPECTED)
    # reusable after compute, threshold as compute kwarg
    assert metric.compute(predictions=P, references=Y, threshold=0.35)["confusion_matrix"] == [[3, 1], [0, 6]]


def test_evaluate_metric_does_not_touch_default_cache(tmp_path):
    metric = BinaryClassificationMetrics(cache_dir=str(tmp_path / "cache"))
    metric.compute(predictions=P, references=Y)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("threshold", "cm"),
    [
        (0.5, [[3, 1], [2, 4]]),
        (0.6, [[3, 1], [2, 4]]),  # prob == threshold counts as positive
        (0.6000001, [[4, 0], [2, 4]]),
        (0.0, [[0, 4], [0, 6]]),
        (1.0, [[4, 0], [6, 0]]),
        (0.45, [[3, 1], [1, 5]]),
    ],
)
def test_threshold_semantics(threshold, cm):
    assert compute_binary_metrics(P, Y, threshold=threshold)["confusion_matrix"] == cm
    assert (
        BinaryClassificationMetrics().compute(predictions=P, references=Y, threshold=threshold)["confusion_matrix"]
        == cm
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_metrics_agree_with_confusion_matrix(seed, threshold):
    p, y = _random_data(seed=seed)
    r = compute_binary_metrics(p, y, threshold)
    (tn, fp), (fn, tp) = r["confusion_matrix"]
    assert tn + fp + fn + tp == y.size
    assert r["accuracy"] == pytest.approx((tp + tn) / y.size)
    assert r["precision"] == pytest.approx(tp / (tp + fp))
    assert r["recall"] == pytest.approx(tp / (tp + fn))
    assert r["specificity"] == pytest.approx(tn / (tn + fp))
    assert r["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


@pytest.mark.parametrize(
    ("probs", "labels", "cm", "expected"),
    [
        (
            [0.2, 0.7, 0.9],
            [1, 1, 1],
            [[0, 0], [1, 2]],
            {"recall": 2 / 3, "specificity": 0.0, "precision": 1.0},
        ),
        (
            [0.2, 0.7, 0.1],
            [0, 0, 0],
            [[2, 1], [0, 0]],
            {"recall": 0.0, "specificity": 2 / 3, "precision": 0.0},
        ),
        ([0.1, 0.2], [0, 0], [[2, 0], [0, 0]], {"recall": 0.0, "precision": 0.0, "f1": 0.0, "accuracy": 1.0}),
    ],
)
def test_single_class_does_not_crash(probs, labels, cm, expected):
    for result in (
        compute_binary_metrics(probs, labels),
        BinaryClassificationMetrics().compute(predictions=probs, references=labels),
    ):
        assert result["confusion_matrix"] == cm
        assert math.isnan(result["roc_auc"])
        for name, value in expected.items():
            assert result[name] == pytest.approx(value), name


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        ([0.1, 0.2], [0, 1, 1], "same length"),
        ([], [], "0 examples"),
        ([0.1, 2.5], [0, 1], "apply a sigmoid"),
        ([0.1, float("nan")], [0, 1], "finite"),
        ([0.1, 0.2], [0, 2], "labels must be 0"),
    ],
)
def test_bad_inputs_raise_clear_errors(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_binary_metrics(probs, labels)


@pytest.mark.parametrize(
    ("make_predictions", "make_labels"),
    [
        (lambda logits: logits[:, None].astype(np.float32), lambda y: np.asarray(y, dtype=np.float32)),
        (lambda logits: logits.astype(np.float32), lambda y: np.asarray(y, dtype=np.float32)[:, None]),
        (
            lambda logits: (logits[:, None], np.zeros((logits.size, 4))),
            lambda y: np.asarray(y, dtype=np.int64),
        ),
    ],
    ids=["N1-logits", "N-logits-N1-labels", "tuple-predictions"],
)
def test_make_compute_metrics_shapes(make_predictions, make_labels):
    compute = make_compute_metrics()
    result = compute(EvalPrediction(predictions=make_predictions(_logit(P)), label_ids=make_labels(Y)))
    assert set(result) == {*METRIC_NAMES, "tn", "fp", "fn", "tp"}
    assert (result["tn"], result["fp"], result["fn"], result["tp"]) == (3, 1, 2, 4)
    assert all(isinstance(result[k], int) for k in ("tn", "fp", "fn", "tp"))
    assert all(isinstance(result[k], float) for k in METRIC_NAMES)
    for name in METRIC_NAMES:
        assert result[name] == pytest.approx(EXPECTED[name], rel=1e-6), name


def test_make_compute_metrics_callable_threshold_read_at_call_time():
    state = {"threshold": 0.5}
    compute = make_compute_metrics(lambda: state["threshold"])
    eval_pred = EvalPrediction(predictions=_logit(P)[:, None], label_ids=np.asarray(Y, dtype=np.float32))
    assert compute(eval_pred)["tp"] == 4
    state["threshold"] = 0.35
    assert (compute(eval_pred)["fn"], compute(eval_pred)["tp"]) == (0, 6)


def test_make_compute_metrics_extreme_logits_and_padding():
    logits = np.array([[-1000.0], [1000.0], [-5.0], [5.0], [0.0]], dtype=np.float32)
    labels = np.array([0.0, 1.0, 1.0, 0.0, -100.0], dtype=np.float32)
    result = make_compute_metrics()((logits, labels))  # plain tuple; -100 padding dropped
    assert (result["tn"], result["fp"], result["fn"], result["tp"]) == (1, 1, 1, 1)
    assert all(math.isfinite(result[k]) for k in METRIC_NAMES)


def test_make_compute_metrics_rejects_two_logits():
    with pytest.raises(ValueError, match="one logit"):
        make_compute_metrics()(EvalPrediction(predictions=np.zeros((4, 2)), label_ids=np.zeros(4)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.99, 1.0])
def test_choose_threshold_for_sensitivity_is_highest_meeting_target(seed, target):
    p, y = _random_data(n=300, seed=seed)
    t = choose_threshold_for_sensitivity(p, y, target)
    assert compute_binary_metrics(p, y, t)["recall"] >= target
    assert t in p[y == 1]
    # every threshold in (t, next probability above t] predicts like that next probability: it falls short
    higher = p[p > t]
    if higher.size:
        assert compute_binary_metrics(p, y, higher.min())["recall"] < target


@pytest.mark.parametrize(
    ("target", "expected"),
    [(1.0, 0.4), (5 / 6, 0.45), (0.7, 0.45), (4 / 6, 0.7), (0.5, 0.8), (0.1, 0.95)],
)
def test_choose_threshold_hand_computed(target, expected):
    assert choose_threshold_for_sensitivity(P, Y, target) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("probs", "labels", "target", "message"),
    [
        (P, Y, 0.0, "target_sensitivity must be in"),
        (P, Y, 1.5, "target_sensitivity must be in"),
        ([0.1, 0.2], [0, 0], 0.9, "without positive"),
    ],
)
def test_choose_threshold_errors(probs, labels, target, message):
    with pytest.raises(ValueError, match=message):
        choose_threshold_for_sensitivity(probs, labels, target)


@pytest.mark.parametrize("threshold", [0.4, 0.5, 0.6])
def test_bootstrap_ci_contains_point_estimate_and_is_deterministic(threshold):
    p, y = _random_data(n=500, seed=3)
    point = compute_binary_metrics(p, y, threshold)
    ci = bootstrap_ci(p, y, threshold=threshold, n_boot=300, seed=7)
    assert set(ci) == set(METRIC_NAMES)
    for name, (low, high) in ci.items():
        assert 0.0 <= low <= point[name] <= high <= 1.0, name
        assert high - low < 0.2, name
    assert bootstrap_ci(p, y, threshold=threshold, n_boot=300, seed=7) == ci
    assert bootstrap_ci(p, y, threshold=threshold, n_boot=300, seed=8) != ci


def test_bootstrap_ci_narrows_with_alpha_and_handles_ties():
    p, y = _random_data(n=300, seed=4)
    p = np.round(p, 1)  # many ties: AUC must use half credit for tied pairs
    wide = bootstrap_ci(p, y, n_boot=400, alpha=0.01)
    narrow = bootstrap_ci(p, y, n_boot=400, alpha=0.5)
    auc = compute_binary_metrics(p, y)["roc_auc"]
    for name in METRIC_NAMES:
        assert wide[name][0] <= narrow[name][0] <= narrow[name][1] <= wide[name][1]
    assert narrow["roc_auc"][0] - 0.005 <= auc <= narrow["roc_auc"][1] + 0.005


def test_bootstrap_ci_single_class_gives_nan_auc():
    ci = bootstrap_ci([0.2, 0.7, 0.9, 0.6], [1, 1, 1, 1], n_boot=50)
    assert all(math.isnan(v) for v in ci["roc_auc"])
    assert ci["specificity"] == (0.0, 0.0)
    assert 0.0 <= ci["recall"][0] <= ci["recall"][1] <= 1.0


def test_bootstrap_ci_tiny_set_skips_single_class_resamples():
    ci = bootstrap_ci([0.2, 0.8, 0.6], [0, 1, 1], n_boot=200)
    assert all(not math.isnan(v) for bounds in ci.values() for v in bounds)
