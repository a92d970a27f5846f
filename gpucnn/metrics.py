"""Classification metrics on host NumPy arrays: accuracy, confusion matrix, ROC/AUC, background rejection.

Binary metrics follow the particle-physics reading: label 1 is signal, label 0
background; a higher score means "more signal-like". The signal efficiency
is the true-positive rate, the background efficiency the false-positive rate,
and the background rejection at a working point is 1 / background efficiency.
"""

from __future__ import annotations

import numpy as np


def _labels(y, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{where}: expected labels of shape (N,), got {y.shape}")
    return y


def _predicted_classes(y_pred, n: int, where: str) -> np.ndarray:
    """Class indices from labels (N,) or from per-class scores (N, K) by argmax."""
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    if y_pred.shape != (n,):
        raise ValueError(f"{where}: predictions of shape {np.shape(y_pred)} do not match {n} labels")
    return y_pred


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted class equals the label.

    y_true (N,) integer labels; y_pred (N,) predicted labels or (N, K) scores
    (probabilities or logits; the argmax is the prediction).
    """
    y_true = _labels(y_true, "accuracy")
    y_pred = _predicted_classes(y_pred, len(y_true), "accuracy")
    if len(y_true) == 0:
        raise ValueError("accuracy: no samples")
    return float((y_true == y_pred).mean())


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """counts (K, K) int64: ``counts[i, j]`` = samples of true class i predicted as class j.

    y_pred as in ``accuracy``; K is ``num_classes`` or 1 + the largest class seen.
    """
    y_true = _labels(y_true, "confusion_matrix").astype(np.int64)
    y_pred = _predicted_classes(y_pred, len(y_true), "confusion_matrix").astype(np.int64)
    seen = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    k = seen if num_classes is None else int(num_classes)
    if min(y_true.min(initial=0), y_pred.min(initial=0)) < 0 or seen > k:
        raise ValueError(f"confusion_matrix: classes must lie in [0, {k}), got labels in "
                         f"[{min(y_true.min(initial=0), y_pred.min(initial=0))}, {seen - 1}]")
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _binary(y_true, scores, where: str):
    y_true = _labels(y_true, where)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.shape != y_true.shape:
        raise ValueError(f"{where}: scores of shape {scores.shape} do not match labels {y_true.shape}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"{where}: labels must be 0 (background) or 1 (signal)")
    positives = int(y_true.sum())
    if positives == 0 or positives == len(y_true):
        raise ValueError(f"{where}: needs both signal (1) and background (0) samples")
    return y_true.astype(bool), scores


def roc_curve(y_true, scores):
    """ROC curve of a binary classifier: ``(fpr, tpr, thresholds)``, each (T,).

    Point t counts a sample as positive when ``score >= thresholds[t]``;
    thresholds run from +inf (nothing positive: fpr = tpr = 0) down to the
    lowest score (everything positive: fpr = tpr = 1), one per distinct score.
    """
    y, s = _binary(y_true, scores, "roc_curve")
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_each_score]
    fp = (last_of_each_score + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_each_score]]


def auc(x, y) -> float:
    """Area under the curve through the points (x, y), by the trapezoid rule (x sorted ascending)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"auc: needs two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    if np.any(np.diff(x) < 0):
        raise ValueError("auc: x must be sorted in ascending order")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve: the probability that a random signal outscores a random background."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return auc(fpr, tpr)


def background_rejection(y_true, scores, signal_efficiency: float = 0.5) -> float:
    """1 / background efficiency at the working point with the given signal efficiency.

    The background efficiency (false-positive rate) at ``signal_efficiency``
    (true-positive rate in (0, 1]) is read off the ROC curve by linear
    interpolation between its points; a perfect separation gives inf.
    """
    if not 0.0 < signal_efficiency <= 1.0:
        raise ValueError(f"background_rejection: signal_efficiency must lie in (0, 1], got {signal_efficiency}")
    fpr, tpr, _ = roc_curve(y_true, scores)
    # tpr is non-decreasing; interpolate fpr on its rising segments (first point of each tpr value).
    keep = np.r_[True, np.diff(tpr) > 0]
    eff_b = float(np.interp(signal_efficiency, tpr[keep], fpr[keep]))
    return np.inf if eff_b == 0.0 else 1.0 / eff_b


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None) -> dict:
    """Per-class precision, recall, F1 and support, each a (K,) array, from labels (N,).

    y_pred as in ``accuracy``; K as in ``confusion_matrix``. For class k:
    precision = TP / (TP + FP) (of the samples predicted k, the share that are k),
    recall = TP / (TP + FN) (of the samples of class k, the share found),
    F1 = their harmonic mean, support = the number of samples of class k.
    A ratio with a zero denominator (a class never predicted, or absent) is 0,
    as scikit-learn's ``zero_division=0`` gives.
    """
    counts = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(counts).astype(np.float64)
    predicted, support = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}
