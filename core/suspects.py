"""Photos most likely mislabelled, from the cross-validated probabilities (`core.training.crossval`): confident
learning, as the `cleanlab` package implements it (`find_label_issues`), ranked so that the labels most likely
wrong come first. Each photo was judged by a head that never trained on it, so a confident disagreement with its
label is evidence against the label, not the model's memory of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MAX_SUSPECTS = 24


def suspicious_labels(oof: pd.DataFrame | None, classes: list[str], limit: int = MAX_SUSPECTS) -> pd.DataFrame:
    """Rows of `oof` (path, label, p_<class>…) whose label confident learning flags, most suspicious first, with
    `suggested` (the class the cross-validated head believes) and `p_label` (its probability for the given label).
    Photos moved or deleted since (already fixed) are left out. Empty when nothing is flagged."""
    columns = ["path", "label", "suggested", "p_label", "p_suggested"]
    if oof is None or oof.empty or len(classes) < 2:
        return pd.DataFrame(columns=columns)
    from cleanlab.filter import find_label_issues  # imports scikit-learn: only when a queue is asked for

    probs = oof[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
    probs = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    labels = np.array([classes.index(label) for label in oof["label"]])
    if len(np.unique(labels)) < 2:
        return pd.DataFrame(columns=columns)
    try:
        # n_jobs=1: cleanlab's default forks worker processes, which deadlocks in a process with TensorFlow's
        # (or Streamlit's) threads running; on a few hundred photos one process takes milliseconds.
        ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    except ValueError:  # e.g. a class with a single photo: nothing confident to say
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({
        "path": oof["path"].to_numpy()[ranked], "label": oof["label"].to_numpy()[ranked],
        "suggested": [classes[i] for i in probs[ranked].argmax(axis=1)],
        "p_label": probs[ranked, labels[ranked]].round(4), "p_suggested": probs[ranked].max(axis=1).round(4)})
    still_there = [Path(p).exists() for p in frame["path"]]
    return frame[still_there].head(limit).reset_index(drop=True)
