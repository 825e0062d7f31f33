"""Cross-validated accuracy of the bottleneck head on cached features: an honest number for small datasets.

With a few dozen validation photos one split is noise (one photo is 2-4 points). For a dataset under
`CV_MAX_PHOTOS` photos the head is trained k times on the cached features of the training + validation photos,
each time validating on another fold, so every photo is judged once by a head that never saw it. The spread of
the k accuracies says how much a single split's number can be trusted. It takes seconds (features come from the
cache) and runs after the run's results are on disk, so it never delays them.

The out-of-fold probabilities are also what `core.suspects` ranks possibly mislabelled photos by.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.evaluate import two_column
from core.features import extract_features
from core.give_way import give_way_if_asked
from core.models import build_head
from core.runs import Run
from core.tfenv import keras
from core.training.data import class_weights
from core.training.head import HeadFitConfig, fit_head, head_probabilities
from core.workspace import features_dir

CV_MAX_PHOTOS = 500  # above this, one validation split is large enough and k heads cost more than they tell
CV_FOLDS = 5


@dataclass
class CrossValidation:
    fold_accuracies: list[float]
    fold_sizes: list[int]
    probs: np.ndarray  # out-of-fold probabilities, one row per photo (columns: classes)

    @property
    def n_photos(self) -> int:
        return sum(self.fold_sizes)

    def summary(self) -> dict:
        acc = np.array(self.fold_accuracies)
        return {"k": len(acc), "n_photos": self.n_photos, "accuracy_mean": round(float(acc.mean()), 5),
                "accuracy_std": round(float(acc.std(ddof=1)) if len(acc) > 1 else 0.0, 5),
                "fold_accuracies": [round(float(a), 5) for a in acc], "fold_sizes": self.fold_sizes}


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per photo: each class dealt round-robin over the folds after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        folds[idx] = (start + np.arange(len(idx))) % k
        start += len(idx)  # the next class starts where this one ended: folds stay even in size
    return folds


def _give_way_between_epochs(_row: dict) -> bool:
    give_way_if_asked()  # an epoch is ~15 ms (a fold ~1 s): a waiting run starts at once
    return False


def cross_validate_head(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: TrainConfig,
                        k: int = CV_FOLDS) -> CrossValidation | None:
    """k-fold CV of the run's head settings on features `x`; None when there are too few photos for 2 folds."""
    k = min(k, len(y) // 2)
    if k < 2:
        return None
    folds = stratified_folds(y, k, cfg.seed)
    probs = np.zeros((len(y), max(n_classes, 2)))
    accs, sizes = [], []
    for fold in range(k):
        give_way_if_asked()
        held, kept = folds == fold, folds != fold
        keras.utils.set_random_seed(cfg.seed + fold)
        head = build_head(x.shape[1], n_classes, cfg.dense_units, cfg.dropout)
        weights = class_weights(y[kept], n_classes) if cfg.class_weights == "balanced" else None
        fit_head(head, x[kept], y[kept], x[held], y[held],
                 HeadFitConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience if cfg.early_stopping else None,
                               cfg.seed + fold), weights, on_epoch=_give_way_between_epochs)
        p = two_column(head_probabilities(head, x[held]))
        probs[held] = p
        accs.append(float((p.argmax(axis=1) == y[held]).mean()))
        sizes.append(int(held.sum()))
    return CrossValidation(accs, sizes, probs)


def cross_validate_run(run: Run) -> dict | None:
    """Cross-validate a finished run's head on its training + validation photos (features from the cache) when
    the dataset is small; writes metrics.json's "cross_validation" and the run's out-of-fold probabilities.
    None (and nothing written) for scratch runs and datasets of `CV_MAX_PHOTOS` photos or more."""
    cfg: TrainConfig = run.config()
    split, classes = run.split(), run.labels()
    if cfg.mode == "scratch" or not split or not classes:
        return None
    items = [it for it in split["items"] if it["split"] in ("train", "val")]
    if not 4 <= len(items) < CV_MAX_PHOTOS:
        return None
    started = time.perf_counter()
    paths = [Path(it["path"]) for it in items]
    result = extract_features(paths, cfg.backbone, features_dir())
    ok = result.ok
    y = np.array([classes.index(it["label"]) for it in items], dtype=np.int64)[ok]
    cv = cross_validate_head(result.features[ok].astype(np.float32), y, len(classes), cfg)
    if cv is None:
        return None
    summary = cv.summary() | {"seconds": round(time.perf_counter() - started, 3),
                              "of": "bottleneck head, training + validation photos"}
    run.write_oof([str(p) for p, keep in zip(paths, ok) if keep], [classes[i] for i in y], cv.probs, classes)
    run.update_metrics(cross_validation=summary)
    return summary
