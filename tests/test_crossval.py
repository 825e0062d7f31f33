"""Small data, honest accuracy: k-fold CV of the head on cached features, and the suspicious-labels queue."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.config import TrainConfig
from core.suspects import suspicious_labels
from core.training.crossval import cross_validate_head, stratified_folds


def _blobs(n_per_class: int, n_classes: int = 3, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


def test_folds_are_stratified_and_cover_every_photo():
    y = np.repeat([0, 1, 2], [10, 7, 13])
    folds = stratified_folds(y, 5, seed=0)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    for c in (0, 1, 2):
        sizes = np.bincount(folds[y == c], minlength=5)
        assert sizes.max() - sizes.min() <= 1
    assert max(np.bincount(folds)) - min(np.bincount(folds)) <= 1


def test_cross_validation_judges_every_photo_once_with_a_spread():
    x, y = _blobs(12)
    cv = cross_validate_head(x, y, 3, TrainConfig(epochs=30, batch_size=8, lr=1e-2, dense_units=32))
    summary = cv.summary()
    assert summary["k"] == 5 and summary["n_photos"] == 36 and sum(summary["fold_sizes"]) == 36
    assert summary["accuracy_mean"] >= 0.9 and summary["accuracy_std"] >= 0
    assert cv.probs.shape == (36, 3) and np.allclose(cv.probs.sum(axis=1), 1, atol=1e-4)


def test_too_few_photos_for_two_folds_gives_none():
    x, y = _blobs(1, n_classes=3)
    assert cross_validate_head(x[:3], y[:3], 3, TrainConfig(epochs=2)) is None


def test_suspicious_labels_put_the_flipped_ones_first(tiny_dataset):
    paths = sorted(str(p) for p in tiny_dataset.rglob("*.png"))
    classes = ["blue", "green", "red"]
    truth = [p.split("/")[-2] for p in paths]
    probs = np.full((len(paths), 3), 0.02)
    for i, label in enumerate(truth):
        probs[i, classes.index(label)] = 0.96
    given = list(truth)
    flipped = [1, 10]  # filed under the wrong class: the cross-validated head confidently disagrees
    given[1], given[10] = "red", "blue"
    oof = pd.concat([pd.DataFrame({"path": paths, "label": given}),
                     pd.DataFrame(probs, columns=[f"p_{c}" for c in classes])], axis=1)
    queue = suspicious_labels(oof, classes)
    assert set(queue["path"]) == {paths[i] for i in flipped}
    assert queue.set_index("path").loc[paths[1], "suggested"] == "blue"
    assert (queue["p_label"] < 0.1).all()
    assert suspicious_labels(None, classes).empty
