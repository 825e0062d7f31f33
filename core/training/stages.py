"""The recipe's stages, each a function from the splits to a trained model, with the time it took:

    train_scratch           the small convnet, end to end, with augmentation (the baseline)
    train_bottleneck_head   cached backbone features → dense head, in seconds
    finetune                the backbone's top block + head, SGD with a small learning rate (warm-up, cosine decay),
                            BatchNorm in inference mode, augmentation on: on cached activations of the frozen lower
                            part (the default, core.training.finetune_cached, which first calibrates the head on
                            the augmented copies' features), or on whole images every epoch (`finetune_full`)
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np

from core.activations import CutError
from core.augment import build_augmenter
from core.backbones import build_feature_extractor, get_backbone, set_top_block_trainable
from core.config import TrainConfig
from core.datasets import content_key
from core.errors import FewShotError
from core.features import extract_features
from core.models import build_head, build_image_classifier, build_scratch_body, loss_for, with_augmentation
from core.reporting import Reporter
from core.runs import Run, check_finetune_source
from core.tfenv import keras
from core.training.data import SPLIT_NAMES, SplitData, class_weights
from core.training.finetune_cached import finetune_learning_rate, finetune_on_activations
from core.training.fit import evaluate_on_images, fit_on_images, rounded
from core.training.head import HeadFitConfig, fit_head, head_probabilities
from core.workspace import features_dir


class TrainingError(FewShotError):
    """Training cannot proceed; the message says why in plain words."""


@dataclass
class StageTimes:
    """What a stage cost; the run's metrics.json reports the sums."""
    n_extracted: int = 0          # images that went through the backbone (not read from the cache)
    extract_seconds: float = 0.0
    train_seconds: float = 0.0

    def __add__(self, other: StageTimes) -> StageTimes:
        return StageTimes(self.n_extracted + other.n_extracted, self.extract_seconds + other.extract_seconds,
                          self.train_seconds + other.train_seconds)


@dataclass
class HeadResult:
    head: keras.Model
    probs: dict[str, np.ndarray]  # per split, from the features (no second pass through the backbone)
    times: StageTimes


def train_bottleneck_head(cfg: TrainConfig, n_classes: int, splits: dict[str, SplitData],
                          reporter: Reporter) -> HeadResult:
    """Extract (or read cached) features, train the dense head on them. `splits` loses the files that turned out
    unreadable at extraction time."""
    spec = get_backbone(cfg.backbone)
    times = StageTimes()
    all_paths = [p for s in SPLIT_NAMES for p in splits[s].paths]
    reporter.phase("extracting", "extracting features")
    started = time.perf_counter()
    result = extract_features(all_paths, cfg.backbone, features_dir(),
                              progress=lambda d, t: reporter.progress(d, t, f"extracting features: {d}/{t} images"),
                              should_stop=reporter.should_stop, keys=_content_keys(all_paths))
    times.n_extracted += result.n_extracted
    feats, offset = {}, 0
    for s in SPLIT_NAMES:
        n = len(splits[s])
        ok = result.ok[offset:offset + n]
        # A file that became unreadable after the scan (moved, truncated mid-run) is left out, not learned
        # from as an all-zero feature vector.
        feats[s] = result.features[offset:offset + n][ok]
        splits[s] = splits[s].keep(ok)
        offset += n
    for path, reason in result.failed:
        reporter.log(f"skipped {path}: {reason}")
    x_train, y_train = feats["train"], splits["train"].y
    if cfg.augment_copies and cfg.augment.enabled and not cfg.augment.is_identity():
        for copy in range(1, cfg.augment_copies + 1):
            reporter.phase("extracting", f"augmented copy {copy} of {cfg.augment_copies}")
            aug = extract_features(splits["train"].paths, cfg.backbone, features_dir(), augment=cfg.augment,
                                   copy=copy, should_stop=reporter.should_stop,
                                   progress=lambda d, t, c=copy: reporter.progress(
                                       d, t, f"augmented copy {c}: {d}/{t} images"))
            times.n_extracted += aug.n_extracted
            x_train = np.concatenate([x_train, aug.features])
            y_train = np.concatenate([y_train, splits["train"].y])
    times.extract_seconds += time.perf_counter() - started

    keras.utils.set_random_seed(cfg.seed)
    head = fresh_head(spec.feature_dim, n_classes, cfg, reuse=cfg.mode == "bottleneck")
    has_val = len(splits["val"]) > 0
    weights = class_weights(y_train, n_classes) if cfg.class_weights == "balanced" else None
    reporter.phase("bottleneck", f"bottleneck: epoch 1 of {cfg.epochs}")
    offset = len(reporter.history)

    def on_epoch(row: dict) -> bool:
        row = {**{k: rounded(v) for k, v in row.items()}, "epoch": offset + row["epoch"], "stage": "bottleneck"}
        reporter.epoch(row)
        reporter.progress(row["epoch"] - offset, cfg.epochs, f"bottleneck: epoch {row['epoch'] - offset} of "
                                                              f"{cfg.epochs}")
        return reporter.should_stop()

    started = time.perf_counter()
    fit_head(head, x_train, y_train, feats["val"] if has_val else None, splits["val"].y if has_val else None,
             HeadFitConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience if cfg.early_stopping else None,
                           cfg.seed), weights, on_epoch)
    times.train_seconds += time.perf_counter() - started
    probs = {s: head_probabilities(head, feats[s]) if len(splits[s]) else np.zeros((0, 1)) for s in feats}
    return HeadResult(head, probs, times)


def _content_keys(paths) -> list[str] | None:
    """The feature cache's keys (content hashes) of `paths`, memoised like the scan's (which just read them), or
    None (extract_features hashes them itself) when a file is gone since the scan: it says which."""
    try:
        return [content_key(p) for p in paths]
    except OSError:
        return None


@functools.lru_cache(maxsize=8)
def _initial_head_weights(seed: int, feature_dim: int, n_classes: int, units: int, dropout: float) -> tuple:
    keras.utils.set_random_seed(seed)
    return tuple(build_head(feature_dim, n_classes, units, dropout).get_weights())


@functools.lru_cache(maxsize=4)
def _reused_head(feature_dim: int, n_classes: int, units: int, dropout: float) -> keras.Model:
    return build_head(feature_dim, n_classes, units, dropout)


def fresh_head(feature_dim: int, n_classes: int, cfg: TrainConfig, reuse: bool = False) -> keras.Model:
    """The dense head as `build_head` makes it after `keras.utils.set_random_seed(cfg.seed)`: the same initial
    weights. With `reuse` (a bottleneck run, whose head is only trained and saved), one Keras head per shape is
    kept and its weights reset, as building one costs 0.1-0.5 s on a loaded laptop: a good part of a warm retrain.
    A fine-tune changes its head inside a bigger model, so it gets a new one."""
    if not reuse:
        return build_head(feature_dim, n_classes, cfg.dense_units, cfg.dropout)
    head = _reused_head(feature_dim, n_classes, cfg.dense_units, cfg.dropout)
    head.set_weights(list(_initial_head_weights(cfg.seed, feature_dim, n_classes, cfg.dense_units, cfg.dropout)))
    return head


def saved_head(run: Run, n_classes: int) -> keras.Model:
    """The dense head a run saved, rebuilt with that run's settings."""
    cfg = run.config()
    head = build_head(get_backbone(cfg.backbone).feature_dim, n_classes, cfg.dense_units, cfg.dropout)
    head.load_weights(run.head_path)
    return head


def load_head_from_run(source_path, cfg: TrainConfig, classes: list[str]) -> keras.Model:
    """The trained head of a finished bottleneck (or finetune) run, checked to fit this run."""
    source = check_finetune_source(source_path, cfg, classes)
    return saved_head(source, len(classes))


def finetune(cfg: TrainConfig, n_classes: int, splits: dict[str, SplitData], head: keras.Model,
             reporter: Reporter) -> tuple[keras.Model, StageTimes, dict]:
    """The fine-tune stage: on cached activations unless `cfg.finetune_full` (or the backbone cannot be cut below
    its top block). Also returns what metrics.json reports as "finetune": which path ran and what it cached."""
    if not cfg.finetune_full:
        try:
            result = finetune_on_activations(cfg, n_classes, splits, head, reporter)
        except CutError as exc:
            reporter.log(f"fine-tuning on full images: {exc}")
        else:
            # Both parts count as training, so train_seconds compares with the full path's.
            return result.classifier, StageTimes(train_seconds=result.activation_seconds + result.train_seconds), \
                result.info
    reporter.log("fine-tuning on full images (every epoch through the whole backbone)")
    classifier, times, outcome = finetune_full(cfg, n_classes, splits, head, reporter)
    return classifier, times, {"path": "full"} | outcome


def finetune_full(cfg: TrainConfig, n_classes: int, splits: dict[str, SplitData], head: keras.Model,
                  reporter: Reporter) -> tuple[keras.Model, StageTimes, dict]:
    """Unfreeze the backbone's top block and train it with the head: SGD(momentum 0.9) with the fine-tune learning
    rate as the peak of a warm-up then cosine decay, augmentation on.
    Also returns the start's validation scores and the epoch kept, as `fit_top` does for the cached path."""
    spec = get_backbone(cfg.backbone)
    # A fresh copy: fine-tuning the process-wide cached extractor would change the features (and cache entries)
    # and exported models of every later run in this process.
    extractor = build_feature_extractor(cfg.backbone)
    n_trainable = set_top_block_trainable(extractor, cfg.backbone)
    reporter.log(f"fine-tuning {n_trainable:,} parameters of {cfg.backbone}'s top block and the head")
    classifier = build_image_classifier(extractor, head)
    model = with_augmentation(classifier, build_augmenter(cfg.augment, seed=cfg.seed))
    # The cached path's warm-up + cosine decay over every step the epochs could take. (Its head calibration on the
    # augmented copies' features is not done here: those features would cost a pass of the whole backbone per copy.)
    steps = int(math.ceil(len(splits["train"]) / cfg.batch_size))
    lr = finetune_learning_rate(cfg.finetune_lr, cfg.finetune_epochs * steps)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), loss=loss_for(n_classes), metrics=["accuracy"])
    # The start (the head on the untouched backbone) is epoch 0: kept when no fine-tune epoch beats it.
    outcome: dict = {"start_val_loss": None, "start_val_accuracy": None}
    start_weights = None
    if len(splits["val"]):
        start_loss, start_acc = evaluate_on_images(model, cfg, splits["val"], spec.input_size, n_classes)
        outcome |= {"start_val_loss": rounded(start_loss), "start_val_accuracy": rounded(start_acc)}
        start_weights = classifier.get_weights()
    offset = len(reporter.history)
    seconds = fit_on_images(model, cfg, splits, spec.input_size, n_classes, reporter, "finetune",
                            cfg.finetune_epochs)
    rows = reporter.history[offset:]
    scored = [r for r in rows if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    # EarlyStopping restored its best epoch; without it the last epoch's weights stand.
    kept = min(scored, key=lambda r: r["val_loss"]) if scored and cfg.early_stopping and len(rows) > 1 \
        else (rows[-1] if rows else None)
    # `not <`: a diverged epoch (NaN loss) never counts as beating the start.
    kept_start = start_weights is not None and (kept is None or kept.get("val_loss") is None
                                                or not kept["val_loss"] < outcome["start_val_loss"])
    if kept_start:
        classifier.set_weights(start_weights)
        reporter.log(f"no fine-tune epoch beat the starting head's validation loss ({outcome['start_val_loss']}): "
                     f"kept the head")
    return classifier, StageTimes(train_seconds=seconds), outcome | {
        "kept_epoch": 0 if kept_start else (kept["epoch"] if kept else None), "kept_start": kept_start}


def train_scratch(cfg: TrainConfig, n_classes: int, splits: dict[str, SplitData],
                  reporter: Reporter) -> tuple[keras.Model, StageTimes]:
    size = cfg.input_size()
    keras.utils.set_random_seed(cfg.seed)
    body = build_scratch_body(size, n_classes, cfg.dropout)
    model = with_augmentation(body, build_augmenter(cfg.augment, seed=cfg.seed))
    model.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss=loss_for(n_classes), metrics=["accuracy"])
    seconds = fit_on_images(model, cfg, splits, size, n_classes, reporter, "scratch", cfg.epochs)
    return body, StageTimes(train_seconds=seconds)
