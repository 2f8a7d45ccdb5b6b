"""Task metrics by name (the GLUE set), computed with scikit-learn and SciPy.

Predictions are raw logits ``(N, C)`` (classification; argmax is taken), class ids ``(N,)``, or
regression scores ``(N,)`` / ``(N, 1)``. Usage::

    compute_metrics(("f1", "accuracy"), logits, labels)  # {"f1": 0.81, "accuracy": 0.74}
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from shrink.errors import UserError
from shrink.registry import Registry

Metric = Callable[[np.ndarray, np.ndarray], float]
METRICS: Registry[Metric] = Registry("metric")


def class_ids(predictions: np.ndarray) -> np.ndarray:
    """Predicted class ids from logits ``(N, C)`` (argmax) or ids ``(N,)``. Usage: ``class_ids(logits)``."""
    predictions = np.asarray(predictions)
    return predictions.argmax(axis=-1) if predictions.ndim == 2 else predictions.astype(np.int64)


def scores(predictions: np.ndarray) -> np.ndarray:
    """Regression scores from ``(N,)`` or ``(N, 1)``; UserError for class logits. Usage: ``scores(preds)``."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.ndim == 2 and predictions.shape[1] == 1:
        return predictions[:, 0]
    if predictions.ndim != 1:
        raise UserError(f"a regression metric needs one score per example, got predictions of shape "
                        f"{predictions.shape}; use accuracy/f1/mcc for classification")
    return predictions


@METRICS.register("accuracy", aliases=("acc",))
def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct classes. Usage: ``accuracy(logits, labels)``."""
    return float(np.mean(class_ids(predictions) == np.asarray(labels)))


@METRICS.register("f1")
def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of class 1 for binary tasks (as GLUE MRPC/QQP), macro-averaged F1 beyond two classes."""
    from sklearn.metrics import f1_score  # scipy and sklearn load lazily: they cost a second at import

    ids = class_ids(predictions)
    width = predictions.shape[1] if np.ndim(predictions) == 2 else int(max(ids.max(), labels.max())) + 1
    return float(f1_score(labels, ids, average="binary" if width <= 2 else "macro", zero_division=0))


@METRICS.register("mcc", aliases=("matthews", "matthews_corrcoef"))
def mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (GLUE CoLA). Usage: ``mcc(logits, labels)``."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, class_ids(predictions)))


@METRICS.register("pearson", aliases=("pearsonr",))
def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation of scores and gold scores (NaN when either is constant)."""
    return _correlation("pearsonr", predictions, labels)


@METRICS.register("spearman", aliases=("spearmanr",))
def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation of scores and gold scores (NaN when either is constant)."""
    return _correlation("spearmanr", predictions, labels)


def _correlation(method: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy import stats

    with warnings.catch_warnings():
        # A constant prediction (an untrained model) has no correlation: report NaN without noise.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(getattr(stats, method)(scores(predictions), np.asarray(labels, dtype=np.float64)).statistic)


def compute_metrics(names: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``{name: value}`` for each metric in ``names``. Usage: ``compute_metrics(task.metrics, logits, labels)``."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    return {name: METRICS.get(name)(predictions, labels) for name in names}
