"""'Which augmentation suits my photos?': each preset measured on the dataset in seconds.

For every preset, the bottleneck head is trained on the cached features of the training photos plus `copies`
augmented copies of each (made with that preset, cached under their own keys, so a second check is instant) and
scored on the untouched validation photos. The preset whose head does best on validation (then lowest validation
loss) is the recommendation. Same split, seed and head settings for every preset: only the augmentation differs.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.augment import PRESETS
from core.backbones import DEFAULT_BACKBONE, get_backbone
from core.config import TrainConfig
from core.datasets import scan_dataset
from core.errors import FewShotError
from core.features import extract_features
from core.models import build_head
from core.tfenv import keras
from core.training.data import split_data
from core.training.head import HeadFitConfig, fit_head
from core.workspace import features_dir

CHECK_COPIES = 2


class AugmentCheckError(FewShotError):
    """The check cannot run on this dataset (no validation photos, one class)."""


@dataclass
class PresetScore:
    preset: str
    title: str
    val_accuracy: float
    val_loss: float
    n_val: int
    seconds: float


def check_presets(data: str | Path, val_split: float = 0.2, seed: int = 0, backbone: str = DEFAULT_BACKBONE,
                  copies: int = CHECK_COPIES, presets: list[str] | None = None,
                  progress: Callable[[str], None] | None = None) -> list[PresetScore]:
    """Scores per preset, best first (validation accuracy, then loss)."""
    ds = scan_dataset(data, val_split, 0.0, seed)
    splits = split_data(ds)
    if len(ds.classes) < 2 or not len(splits["val"]):
        raise AugmentCheckError("The check needs at least two classes and some validation photos.")
    cfg = TrainConfig(data=str(data), backbone=backbone, seed=seed)
    train_paths, val_paths = splits["train"].paths, splits["val"].paths
    base = extract_features(train_paths + val_paths, backbone, features_dir())
    x_train, x_val = base.features[:len(train_paths)], base.features[len(train_paths):]
    y_train, y_val = splits["train"].y, splits["val"].y
    scores = []
    for name in presets or list(PRESETS):
        preset = PRESETS[name]
        started = time.perf_counter()
        if progress:
            progress(f"{preset.title}: augmented copies of {len(train_paths)} photos")
        config = preset.config()
        xs, ys = [x_train], [y_train]
        if not config.is_identity():
            for copy in range(1, copies + 1):
                xs.append(extract_features(train_paths, backbone, features_dir(), augment=config, copy=copy).features)
                ys.append(y_train)
        keras.utils.set_random_seed(seed)
        head = build_head(get_backbone(backbone).feature_dim, len(ds.classes), cfg.dense_units, cfg.dropout)
        history = fit_head(head, np.concatenate(xs), np.concatenate(ys), x_val, y_val,
                           HeadFitConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience, seed))
        best = min(history, key=lambda r: r["val_loss"])
        scores.append(PresetScore(name, preset.title, best["val_accuracy"], best["val_loss"], len(y_val),
                                  time.perf_counter() - started))
    return sorted(scores, key=lambda s: (-s.val_accuracy, s.val_loss))
