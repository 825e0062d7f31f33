"""The run's `model.keras`: save it safely, load it, predict files with it, check it predicts what the app did.

`model.keras` takes raw RGB images of any size (0..255) and returns one probability per class, in the order of
`labels.json`. It is plain Keras: `keras.saving.load_model("model.keras")` needs no code of this project.
"""
from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core import fsutil, images
from core.export.base import ExportError, input_size
from core.give_way import give_way_if_asked
from core.tfenv import keras, tf


def save_model(model: keras.Model, path: Path) -> None:
    """Save to a temporary `.keras` file, then rename: a crash or a full disk never leaves a half-written model."""
    try:
        with fsutil.atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)
    except OSError as exc:
        reason = "the disk is full (free some space and train again)" if exc.errno == errno.ENOSPC else \
            exc.strerror or exc
        raise ExportError(f"could not save the model to {path}: {reason}. The previous model, if any, "
                          f"is untouched.") from exc


def load_model(path: str | Path) -> keras.Model:
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path} does not exist: the run has not saved a model (not finished, or failed).")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged file
        raise ExportError(f"could not load {path}: {exc}") from exc


def predict_files(model: keras.Model, paths: Sequence[str | Path], batch_size: int = 16
                  ) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Probabilities (N, classes) for image files through an exported model; rows of unreadable files are NaN.

    Each image is decoded by the app's one decoder and resized by the model's own Resizing layer: exactly what a
    user of `model.keras` outside the app gets when they feed it the decoded RGB image.
    """
    size = input_size(model)
    n_out = int(model.output_shape[-1])
    probs = np.full((len(paths), n_out), np.nan)
    failed: list[tuple[Path, str]] = []
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    batch, index = [], []

    def flush() -> None:
        if batch:
            give_way_if_asked()  # the export check, in the warm worker: a waiting run goes first
            probs[index] = forward(np.stack(batch)).numpy()
            batch.clear()
            index.clear()

    for i, path in enumerate(paths):
        try:
            # Pre-resize with the model's own op so images of different sizes can share a batch; the model's
            # Resizing layer then sees size×size and leaves it as it is.
            batch.append(images.resize_for_model(images.load_rgb(path, max_side=2 * size), size))
            index.append(i)
        except images.ImageError as exc:
            failed.append((Path(path), str(exc)))
        if len(batch) >= batch_size:
            flush()
    flush()
    return probs, failed


def check_export(model_path: Path, paths: Sequence[Path], expected: np.ndarray) -> dict:
    """Reload the saved model from disk and compare its predictions with the app's on the same images.

    Reported in metrics.json; a disagreement here is the bug users of other tools find only after deploying.
    """
    model = load_model(model_path)
    give_way_if_asked()  # in the warm worker: a run waiting for it goes first (the check is repeated later)
    got, _ = predict_files(model, paths)
    ok = ~np.isnan(got).any(axis=1)
    diff = np.abs(got[ok] - expected[ok])
    return {"n_images": int(ok.sum()), "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "same_top1": float((got[ok].argmax(1) == expected[ok].argmax(1)).mean()) if ok.any() else None}
