"""Model-assisted labelling: a finished run suggests a class for each unlabelled image, least sure first.

Labelling the images the model hesitates on first teaches the next training the most; its surest suggestions can
be accepted at once (one undoable action).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.labeling.actions import move_to_class
from core.labeling.copies import origin_of
from core.labeling.journal import Op, new_id
from core.labeling.places import LabelingError, editable_root, pool_folder
from core.model_cache import load_cached_model
from core.runs import Run, list_runs

_predictions: dict[tuple, list[float]] = {}   # (model file, its mtime, image, size, mtime) → probabilities
_MAX_PREDICTIONS = 100_000  # a long-running server forgets them all past this (each is a few floats)
_predict_lock = threading.Lock()


def suggestion_runs(dataset: str | Path) -> tuple[list[Run], list[str]]:
    """Finished runs with a model, those trained on this dataset (or the one it was copied from) first; and the
    ids of those trained on it."""
    root = Path(dataset).resolve()
    origin = origin_of(root)
    here = {str(root)} | ({str(origin.resolve())} if origin else set())
    finished = [run for run in list_runs() if run.has_model() and run.labels()]

    def trained_here(run: Run) -> bool:
        data = run.config_dict().get("train", {}).get("data", "")
        return bool(data) and str(Path(data).resolve()) in here
    mine = [run for run in finished if trained_here(run)]
    return mine + [run for run in finished if run not in mine], [run.id for run in mine]


def predict_pool(run: Run, paths: Sequence[str | Path]) -> pd.DataFrame:
    """The run's prediction for each image: path, predicted, confidence, margin, p_<class>…, least confident
    first (the images worth labelling first). Unreadable images are left out.

    Predictions are cached per image file, so labelling one image does not predict the rest again.
    """
    from core.evaluate import predictions_frame
    from core.export import ExportError, predict_files

    model_path = run.model_path
    labels = run.labels()
    if not model_path.exists() or not labels:
        raise LabelingError(f"run {run.id} has no saved model (not finished, or failed); pick a finished run.")
    model_key = (str(model_path), model_path.stat().st_mtime_ns)
    keys, known = [], []
    for path in map(Path, paths):
        try:
            st = path.stat()
        except OSError:
            keys.append(None)
            continue
        keys.append(model_key + (str(path), st.st_size, st.st_mtime_ns))
    with _predict_lock:
        missing = [i for i, key in enumerate(keys) if key is not None and key not in _predictions]
        if missing:
            try:
                model = load_cached_model(model_path)
            except ExportError as exc:
                raise LabelingError(str(exc)) from None
            probs, _failed = predict_files(model, [paths[i] for i in missing])
            if len(_predictions) > _MAX_PREDICTIONS:
                _predictions.clear()
            for i, row in zip(missing, probs):
                _predictions[keys[i]] = row.tolist()
        for i, key in enumerate(keys):
            row = _predictions.get(key) if key is not None else None
            if row is not None and all(v == v for v in row):  # NaN row = unreadable image
                known.append((i, row))
    if not known:
        return pd.DataFrame(columns=["path", "predicted", "confidence", "margin"] + [f"p_{c}" for c in labels])
    probs = np.array([row for _, row in known], dtype=float)
    frame = predictions_frame([str(paths[i]) for i, _ in known], None, probs, labels)
    frame = frame.drop(columns=["split", "label", "correct"])
    return frame.sort_values(["confidence", "path"], ascending=True, kind="stable").reset_index(drop=True)


def accept_predictions(dataset: str | Path, frame: pd.DataFrame, threshold: float) -> list[Op]:
    """Move every unlabelled image predicted with confidence ≥ `threshold` to its predicted class: one action,
    undone by one undo. Images no longer in the pool (labelled meanwhile) are left alone."""
    if not 0.0 < threshold <= 1.0:
        raise LabelingError(f"threshold {threshold} must be in (0, 1].")
    root = editable_root(dataset)
    pool = pool_folder(root).resolve()
    chosen = frame[(frame["confidence"] >= threshold) & frame["predicted"].notna()]
    by_class: dict[str, list[Path]] = {}
    for path, label in zip(chosen["path"], chosen["predicted"]):
        path = Path(path).resolve()
        if pool in path.parents and path.is_file():
            by_class.setdefault(str(label), []).append(path)
    batch = new_id()
    done: list[Op] = []
    for label, paths in sorted(by_class.items()):
        done += move_to_class(root, paths, label, batch=batch)
    return done


def suggestions_by_path(frame: pd.DataFrame | None) -> dict[Path, tuple[str, float]]:
    """`predict_pool`'s frame as {image: (predicted class, confidence)}; empty without a frame."""
    if frame is None:
        return {}
    return {Path(p): (c, conf) for p, c, conf in zip(frame["path"], frame["predicted"], frame["confidence"])}


def order_pool(pool: Sequence[Path], suggestions: dict[Path, tuple[str, float]], sort: str) -> list[Path]:
    """The pool in the order the page shows it: by name, or by the model's confidence (`unsure`: least sure first,
    `sure`: surest first) with the images it has no suggestion for last, by name."""
    if sort == "name" or not suggestions:
        return sorted(pool, key=lambda p: p.name.lower())
    known = sorted((p for p in pool if p in suggestions), key=lambda p: (suggestions[p][1], p.name),
                   reverse=sort == "sure")
    return known + sorted((p for p in pool if p not in suggestions), key=lambda p: p.name.lower())
