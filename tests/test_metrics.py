"""Metrics against scikit-learn and against cases worked out by hand."""

import numpy as np
import pytest
from sklearn import metrics as skm

from gpucnn import metrics


def test_accuracy_from_labels_and_from_scores():
    y = np.array([0, 1, 2, 2, 1])
    assert metrics.accuracy(y, np.array([0, 1, 1, 2, 0])) == pytest.approx(0.6)
    scores = np.eye(3)[[0, 1, 1, 2, 0]] * 5.0 - 1.0  # argmax gives the same predictions
    assert metrics.accuracy(y, scores) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="do not match"):
        metrics.accuracy(y, np.zeros(4))


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, p), skm.confusion_matrix(y, p))
    counts = metrics.confusion_matrix([0, 1, 1], [1, 1, 0], num_classes=3)
    np.testing.assert_array_equal(counts, [[0, 1, 0], [1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="classes must lie in"):
        metrics.confusion_matrix([0, 4], [0, 1], num_classes=3)


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_curve_and_auc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: many tied scores
    fpr, tpr, thresholds = metrics.roc_curve(y, scores)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thresholds[1:], ref_thr[1:])
    assert thresholds[0] == np.inf
    assert metrics.roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))


def test_auc_by_hand():
    # Signal scores 0.9, 0.4; background 0.6, 0.1: 3 of the 4 signal/background pairs are ordered right.
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == pytest.approx(0.75)
    assert metrics.auc([0, 1], [0, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both signal"):
        metrics.roc_auc([1, 1], [0.2, 0.3])


def test_background_rejection_by_hand():
    # 4 signal at 0.9, 0.8, 0.7, 0.2; 4 background at 0.75, 0.6, 0.3, 0.1.
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.7, 0.2, 0.75, 0.6, 0.3, 0.1]
    # 50% signal efficiency: cut at 0.8 keeps no background -> infinite rejection.
    assert metrics.background_rejection(y, s, 0.5) == np.inf
    # 75%: the cut must pass 0.7, which passes the background at 0.75 -> eff_B = 1/4, rejection 4.
    assert metrics.background_rejection(y, s, 0.75) == pytest.approx(4.0)
    # 100%: the cut at 0.2 passes 3 backgrounds -> eff_B 3/4.
    assert metrics.background_rejection(y, s, 1.0) == pytest.approx(4 / 3)
    # Between ROC points the background efficiency is interpolated linearly: tpr 0.5 -> 0.75
    # goes from fpr 0 to 0.25, so at 0.625 eff_B = 0.125.
    assert metrics.background_rejection(y, s, 0.625) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="signal_efficiency"):
        metrics.background_rejection(y, s, 0.0)


def test_background_rejection_agrees_with_sklearn_roc():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    s = rng.normal(y * 1.5, 1.0)
    fpr, tpr, _ = skm.roc_curve(y, s)
    expected = 1 / np.interp(0.5, tpr, fpr)
    assert metrics.background_rejection(y, s, 0.5) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_precision_recall_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 150)
    p = np.where(rng.random(150) < 0.6, y, rng.integers(0, 4, 150))
    p[p == 3] = 2  # class 3 is never predicted: its precision is 0/0
    # Class 4 has neither samples nor predictions; num_classes=5 still reports it.
    got = metrics.precision_recall_f1(y, p, num_classes=5)
    ref = skm.precision_recall_fscore_support(y, p, labels=range(5), zero_division=0)
    for key, expected in zip(("precision", "recall", "f1", "support"), ref):
        np.testing.assert_allclose(got[key], expected, err_msg=key)
    scores = np.eye(5)[p] + 0.1 * rng.random((150, 5))  # scores give the same predictions by argmax
    np.testing.assert_allclose(metrics.precision_recall_f1(y, scores)["f1"][:4], ref[2][:4])
