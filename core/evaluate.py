"""Metrics from predicted probabilities: accuracy, per-class precision/recall/F1, confusion."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def two_column(probs: np.ndarray) -> np.ndarray:
    """A sigmoid's (N,) or (N,1) output as (N,2) class probabilities; softmax output passes through."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1 or probs.shape[1] == 1:
        p = probs.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return probs


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    for t, p in zip(y_true, y_pred):
        matrix[t, p] += 1
    return matrix


def frame_confusion(frame: pd.DataFrame, classes: list[str]) -> list[list[int]]:
    """The confusion matrix of a predictions frame (`label`, `predicted` columns), in the order of `classes`;
    rows whose label is not one of `classes` are left out."""
    index = {name: i for i, name in enumerate(classes)}
    pairs = [(index[t], index[p]) for t, p in zip(frame["label"], frame["predicted"]) if t in index and p in index]
    return confusion_matrix([t for t, _ in pairs], [p for _, p in pairs], len(classes)).tolist()


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, classes: list[str]) -> dict:
    """`accuracy`, `per_class` {class: precision, recall, f1, support}, `confusion` (true × predicted), `classes`."""
    y_true = np.asarray(y_true, dtype=int)
    if len(y_true) == 0:
        return {"accuracy": None, "per_class": {}, "confusion": [], "classes": classes, "n": 0}
    probs = two_column(probs)
    y_pred = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    per_class = {}
    for i, name in enumerate(classes):
        tp = matrix[i, i]
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                           "f1": round(float(f1), 4), "support": int(actual)}
    return {"accuracy": round(float((y_pred == y_true).mean()), 4), "per_class": per_class,
            "confusion": matrix.tolist(), "classes": classes, "n": int(len(y_true))}


def predictions_frame(paths: Sequence[Path | str], y_true: Sequence[int] | None, probs: np.ndarray,
                      classes: list[str], split: str = "") -> pd.DataFrame:
    """One row per image: path, split, true label, predicted label, confidence, correct, margin, p_<class>…"""
    probs = two_column(probs)
    order = np.argsort(-probs, axis=1)
    top = probs[np.arange(len(probs)), order[:, 0]] if len(probs) else np.array([])
    second = probs[np.arange(len(probs)), order[:, 1]] if len(probs) and probs.shape[1] > 1 else np.zeros(len(top))
    frame = pd.DataFrame({
        "path": [str(p) for p in paths],
        "split": split,
        "label": [classes[i] for i in y_true] if y_true is not None else None,
        "predicted": [classes[i] for i in order[:, 0]] if len(probs) else [],
        "confidence": np.round(top, 6),
        # margin between the two most likely classes: small = the model hesitates (worth a look, or a label)
        "margin": np.round(top - second, 6),
    })
    frame["correct"] = frame["label"] == frame["predicted"] if y_true is not None else None
    per_class = pd.DataFrame({f"p_{name}": np.round(probs[:, i], 6) if len(probs) else []
                              for i, name in enumerate(classes)}, index=frame.index)
    return pd.concat([frame, per_class], axis=1)  # one concat: 100 classes would fragment 100 inserts
