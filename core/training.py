"""Train a run: the recipe's three modes, written to the run folder as they go.

    scratch     the small convnet, end to end, with augmentation (the baseline)
    bottleneck  cached backbone features → dense head, in seconds
    finetune    bottleneck head first (or --from a bottleneck run), then the backbone's top block + head,
                SGD with a small learning rate, BatchNorm in inference mode, augmentation on
"""
from __future__ import annotations

from core.errors import FewShotError
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import fsutil
from core.augment import build_augmenter
from core.backbones import build_feature_extractor, get_backbone, set_top_block_trainable
from core.config import TrainConfig
from core.datasets import Dataset, Item, scan_dataset
from core.evaluate import compute_metrics, predictions_frame, two_column
from core.export import check_export, save_model
from core.head_training import HeadFitConfig, fit_head
from core.features import StopRequested, cached_extractor, extract_features, image_dataset
from core.models import (build_export_model, build_head, build_image_classifier, build_scratch_body, is_binary,
                         loss_for, with_augmentation)
from core.reporting import Reporter
from core.runs import Run, get_run
from core.tfenv import keras, tf
from core.workspace import features_dir


class TrainingError(FewShotError):
    """Training cannot proceed; the message says why in plain words."""


@dataclass
class SplitData:
    items: list[Item]
    y: np.ndarray  # class indices

    @property
    def paths(self) -> list[Path]:
        return [it.path for it in self.items]

    def __len__(self) -> int:
        return len(self.items)


def _split_data(ds: Dataset, split: str) -> SplitData:
    items = ds.split(split)
    return SplitData(items, np.array([ds.label_index(it.label) for it in items], dtype=np.int64))


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """'balanced': n / (k · count_c), so every class weighs the same in the loss whatever its size."""
    counts = np.bincount(y, minlength=n_classes)
    return {c: float(len(y) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


def _targets(y: np.ndarray, n_classes: int) -> np.ndarray:
    return y.astype(np.float32) if is_binary(n_classes) else y


class RunCallback(keras.callbacks.Callback):
    """Reports progress per batch and history per epoch; ends training within a batch when a stop is asked."""

    def __init__(self, reporter: Reporter, stage: str, epochs: int, steps: int, epoch_offset: int):
        super().__init__()
        self.reporter, self.stage, self.epochs, self.steps, self.offset = reporter, stage, epochs, steps, epoch_offset
        self.epoch_start = time.perf_counter()
        self.current_epoch = 0
        self.stopped = False

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        done = self.current_epoch + (batch + 1) / max(self.steps, 1)
        self.reporter.progress(done, self.epochs, f"{self.stage}: epoch {self.current_epoch + 1} of {self.epochs}")
        if self.reporter.should_stop():
            self.stopped = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        lr = self.model.optimizer.learning_rate
        self.reporter.epoch({
            "epoch": self.offset + epoch + 1, "stage": self.stage,
            "loss": _round(logs.get("loss")), "accuracy": _round(logs.get("accuracy")),
            "val_loss": _round(logs.get("val_loss")), "val_accuracy": _round(logs.get("val_accuracy")),
            "lr": _round(float(np.asarray(lr))), "seconds": round(time.perf_counter() - self.epoch_start, 3),
        })


def _round(value) -> float | None:
    return None if value is None else round(float(value), 5)


def _fit(model: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset | None, cfg: TrainConfig,
         reporter: Reporter, stage: str, epochs: int, steps: int, weights: dict | None) -> RunCallback:
    """`model.fit` with the run's callbacks: progress and history to the run folder, stop requests, and early
    stopping that restores the best weights."""
    callback = RunCallback(reporter, stage, epochs, steps, epoch_offset=len(reporter.history))
    callbacks: list = [callback]
    if cfg.early_stopping and epochs > 1:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss" if validation is not None else "loss", patience=cfg.patience,
            restore_best_weights=True))
    reporter.phase(stage, f"{stage}: epoch 1 of {epochs}")
    # The datasets arrive shuffled (a bounded buffer), so fit's own shuffle is off.
    model.fit(train, validation_data=validation, epochs=epochs, class_weight=weights, callbacks=callbacks,
              verbose=0, shuffle=False)
    return callback


def labelled_images(data: SplitData, size: int, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """(images, labels) batches streamed from disk; unreadable files are dropped."""
    # The scan already dropped unreadable files; one damaged since then trains as a blank image rather than
    # failing the run (a filter would also hide the epoch length from Keras).
    images_ds = image_dataset(data.paths, size, batch_size).unbatch()
    labels_ds = tf.data.Dataset.from_tensor_slices(data.y)
    ds = tf.data.Dataset.zip((images_ds, labels_ds)).map(lambda xo, y: (xo[0], y))
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(data)))  # unbatch hides it; Keras wants it
    if shuffle:
        # Shuffle the decoded stream with a bounded buffer: memory stays flat however large the dataset.
        ds = ds.shuffle(min(len(data), 256), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(2)


def predict_images(model: keras.Model, paths: Sequence[Path], size: int, batch_size: int = 32) -> np.ndarray:
    """Probabilities for image files through a size×size model (rows of unreadable files are NaN)."""
    out = []
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for batch, ok in image_dataset(paths, size, batch_size):
        probs = forward(batch).numpy().astype(np.float64)
        probs[~ok.numpy()] = np.nan
        out.append(probs)
    return np.concatenate(out) if out else np.zeros((0, 1))


# ------------------------------------------------------------------------------------------ stages


def train_bottleneck_head(cfg: TrainConfig, ds: Dataset, splits: dict[str, SplitData], reporter: Reporter,
                          stats: dict) -> tuple[keras.Model, dict[str, np.ndarray]]:
    """Extract (or read cached) features, train the dense head on them. Returns the head and per-split probs."""
    spec = get_backbone(cfg.backbone)
    all_items = [it for s in ("train", "val", "test") for it in splits[s].items]
    reporter.phase("extracting", "extracting features")
    started = time.perf_counter()
    result = extract_features([it.path for it in all_items], cfg.backbone, features_dir(),
                              progress=lambda d, t: reporter.progress(d, t, f"extracting features: {d}/{t} images"),
                              should_stop=reporter.should_stop)
    stats["n_extracted"] += result.n_extracted
    feats, offset = {}, 0
    for s in ("train", "val", "test"):
        n = len(splits[s])
        ok = result.ok[offset:offset + n]
        # A file that became unreadable after the scan (moved, truncated mid-run) is left out, not learned
        # from as an all-zero feature vector.
        feats[s] = result.features[offset:offset + n][ok]
        splits[s] = SplitData([it for it, keep in zip(splits[s].items, ok) if keep], splits[s].y[ok])
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
            stats["n_extracted"] += aug.n_extracted
            x_train = np.concatenate([x_train, aug.features])
            y_train = np.concatenate([y_train, splits["train"].y])
    stats["extract_seconds"] += time.perf_counter() - started

    keras.utils.set_random_seed(cfg.seed)
    n_classes = len(ds.classes)
    head = build_head(spec.feature_dim, n_classes, cfg.dense_units, cfg.dropout)
    has_val = len(splits["val"]) > 0
    weights = class_weights(y_train, n_classes) if cfg.class_weights == "balanced" else None
    reporter.phase("bottleneck", f"bottleneck: epoch 1 of {cfg.epochs}")
    offset = len(reporter.history)

    def on_epoch(row: dict) -> bool:
        row = {**{k: _round(v) for k, v in row.items()}, "epoch": offset + row["epoch"], "stage": "bottleneck"}
        reporter.epoch(row)
        reporter.progress(row["epoch"] - offset, cfg.epochs, f"bottleneck: epoch {row['epoch'] - offset} of "
                                                              f"{cfg.epochs}")
        return reporter.should_stop()

    started = time.perf_counter()
    fit_head(head, x_train, y_train, feats["val"] if has_val else None, splits["val"].y if has_val else None,
             HeadFitConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience if cfg.early_stopping else None,
                           cfg.seed), weights, on_epoch)
    stats["train_seconds"] += time.perf_counter() - started
    probs = {s: head(feats[s], training=False).numpy() if len(splits[s]) else np.zeros((0, 1)) for s in feats}
    return head, probs


def load_head_from_run(run_dir: Path, cfg: TrainConfig, classes: list[str]) -> keras.Model:
    """The trained head of a finished bottleneck (or finetune) run, checked to fit this run."""
    source = get_run(run_dir)
    src_cfg = source.config()
    if src_cfg.mode == "scratch":
        raise TrainingError(f"--from {source.id}: a scratch run has no head to fine-tune; use a bottleneck run.")
    if src_cfg.backbone != cfg.backbone:
        raise TrainingError(f"--from {source.id} used backbone {src_cfg.backbone}, not {cfg.backbone}.")
    if source.labels() != classes:
        raise TrainingError(f"--from {source.id} was trained on classes {source.labels()}, this dataset has "
                            f"{classes}. Retrain the bottleneck head first.")
    if not source.file("head.weights.h5").exists():
        raise TrainingError(f"--from {source.id} has no head.weights.h5 (did it finish?).")
    return _saved_head(source.path, src_cfg, len(classes))


def _saved_head(run_path: Path, cfg: TrainConfig, n_classes: int) -> keras.Model:
    head = build_head(get_backbone(cfg.backbone).feature_dim, n_classes, cfg.dense_units, cfg.dropout)
    head.load_weights(run_path / "head.weights.h5")
    return head


def finetune(cfg: TrainConfig, ds: Dataset, splits: dict[str, SplitData], head: keras.Model, reporter: Reporter,
             stats: dict) -> keras.Model:
    """Unfreeze the backbone's top block and train it with the head: SGD(lr, momentum 0.9), augmentation on."""
    spec = get_backbone(cfg.backbone)
    # A fresh copy: fine-tuning the process-wide cached extractor would change the features (and cache entries)
    # and exported models of every later run in this process.
    extractor = build_feature_extractor(cfg.backbone)
    n_trainable = set_top_block_trainable(extractor, cfg.backbone)
    reporter.log(f"fine-tuning {n_trainable:,} parameters of {cfg.backbone}'s top block and the head")
    classifier = build_image_classifier(extractor, head)
    model = with_augmentation(classifier, build_augmenter(cfg.augment, seed=cfg.seed))
    n_classes = len(ds.classes)
    model.compile(optimizer=keras.optimizers.SGD(cfg.finetune_lr, momentum=0.9), loss=loss_for(n_classes),
                  metrics=["accuracy"])
    _fit_on_images(model, cfg, splits, spec.input_size, n_classes, reporter, "finetune", cfg.finetune_epochs, stats)
    return classifier


def _tf_targets(y, n_classes: int):
    return tf.cast(y, tf.float32) if is_binary(n_classes) else y


def _fit_on_images(model: keras.Model, cfg: TrainConfig, splits: dict[str, SplitData], size: int, n_classes: int,
                   reporter: Reporter, stage: str, epochs: int, stats: dict) -> None:
    """Fit an end-to-end image model (scratch, fine-tune) on images streamed from disk."""
    def batches(split: str, shuffle: bool) -> tf.data.Dataset:
        ds = labelled_images(splits[split], size, cfg.batch_size, shuffle=shuffle, seed=cfg.seed)
        return ds.map(lambda x, y: (x, _tf_targets(y, n_classes)))

    val = batches("val", shuffle=False) if len(splits["val"]) else None
    weights = class_weights(splits["train"].y, n_classes) if cfg.class_weights == "balanced" else None
    steps = int(np.ceil(len(splits["train"]) / cfg.batch_size))
    started = time.perf_counter()
    _fit(model, batches("train", shuffle=True), val, cfg, reporter, stage, epochs, steps, weights)
    stats["train_seconds"] += time.perf_counter() - started


def train_scratch(cfg: TrainConfig, ds: Dataset, splits: dict[str, SplitData], reporter: Reporter,
                  stats: dict) -> keras.Model:
    size = cfg.input_size()
    n_classes = len(ds.classes)
    keras.utils.set_random_seed(cfg.seed)
    body = build_scratch_body(size, n_classes, cfg.dropout)
    model = with_augmentation(body, build_augmenter(cfg.augment, seed=cfg.seed))
    model.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss=loss_for(n_classes), metrics=["accuracy"])
    _fit_on_images(model, cfg, splits, size, n_classes, reporter, "scratch", cfg.epochs, stats)
    return body


# ------------------------------------------------------------------------------------------ the whole run


@dataclass
class TrainResult:
    metrics: dict
    # True when model.keras is left for `write_model_file`: the trained part of a bottleneck run is its head,
    # saved (head.weights.h5) with the predictions before the run is reported done, so the user sees a retrain's
    # results without waiting for the ~1.5 s it takes to build and save the whole backbone into model.keras.
    model_pending: bool


def train(cfg: TrainConfig, run_path: Path, reporter: Reporter) -> TrainResult:
    """Train per `cfg`, writing predictions, metrics, labels, head weights and (unless `model_pending`) model.keras
    into `run_path`."""
    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    reporter.phase("scanning", "reading the dataset")
    ds = scan_dataset(cfg.data, cfg.val_split, cfg.test_split, cfg.seed)
    for skipped in ds.skipped:
        reporter.log(f"skipped {skipped.path}: {skipped.reason}")
    splits = {s: _split_data(ds, s) for s in ("train", "val", "test")}
    fsutil.atomic_write_json(run_path / "split.json", {
        "root": str(ds.root), "layout": ds.layout, "classes": ds.classes,
        "items": [{"path": str(it.path), "label": it.label, "split": it.split} for it in ds.items],
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in ds.skipped]})
    stats = {"n_extracted": 0, "extract_seconds": 0.0, "train_seconds": 0.0}
    n_classes = len(ds.classes)
    size = cfg.input_size()

    probs: dict[str, np.ndarray] = {}
    head = None
    body = None  # the trained image model; None while only the head was trained (the backbone stays frozen)
    if cfg.mode == "scratch":
        body = train_scratch(cfg, ds, splits, reporter, stats)
    else:
        if cfg.mode == "finetune" and cfg.from_run:
            head = load_head_from_run(Path(cfg.from_run), cfg, ds.classes)
        else:
            head, probs = train_bottleneck_head(cfg, ds, splits, reporter, stats)
        if cfg.mode == "finetune" and not reporter.should_stop() and cfg.finetune_epochs:
            head.save_weights(run_path / "head_bottleneck.weights.h5")
            body = finetune(cfg, ds, splits, head, reporter, stats)
            probs = {}
    if reporter.should_stop() and not reporter.history:
        raise StopRequested()

    reporter.phase("evaluating", "predicting the validation and test images")
    for s in ("val", "test"):
        if s not in probs:
            if body is None:  # a head loaded --from another run: predict through the frozen backbone
                body = build_image_classifier(cached_extractor(cfg.backbone)[0], head)
            probs[s] = predict_images(body, splits[s].paths, size) if len(splits[s]) else np.zeros((0, 1))
    frames = [predictions_frame(splits[s].paths, splits[s].y, probs[s], ds.classes, s)
              for s in ("val", "test") if len(splits[s])]
    if frames:
        import pandas as pd
        with fsutil.atomic_path(run_path / "predictions.csv") as tmp:
            pd.concat(frames).to_csv(tmp, index=False)
    val_metrics = compute_metrics(splits["val"].y, probs["val"], ds.classes)
    test_metrics = compute_metrics(splits["test"].y, probs["test"], ds.classes) if len(splits["test"]) else None

    reporter.phase("saving", "saving the model")
    model_pending = body is None
    if not model_pending:
        save_model(build_export_model(body, size, n_classes), run_path / "model.keras")
    fsutil.atomic_write_json(run_path / "labels.json", ds.classes)
    if head is not None:
        with fsutil.atomic_path(run_path / "head.weights.h5", suffix=".weights.h5") as tmp:
            head.save_weights(tmp)
    history = reporter.history
    best = min(history, key=lambda r: r["val_loss"] if r.get("val_loss") is not None else r["loss"]) \
        if history else None
    metrics = {
        "mode": cfg.mode, "backbone": None if cfg.mode == "scratch" else cfg.backbone, "classes": ds.classes,
        "input_size": size,
        "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
        "n_skipped": len(ds.skipped),
        "val_accuracy": val_metrics["accuracy"], "test_accuracy": test_metrics["accuracy"] if test_metrics else None,
        "val_loss": best.get("val_loss") if best else None,
        "best_epoch": best["epoch"] if best else None, "epochs_run": len(history),
        "per_class": val_metrics["per_class"], "confusion": val_metrics["confusion"],
        "test": test_metrics,
        "train_seconds": round(stats["train_seconds"], 3), "extract_seconds": round(stats["extract_seconds"], 3),
        "n_extracted": stats["n_extracted"], "total_seconds": round(time.perf_counter() - t0, 3),
        "export_check": None, "stopped_early_by_user": reporter.should_stop(),
        "phase_seconds": reporter.finish(),
    }
    # Written last: a run folder with metrics.json has all its results (model.keras aside when pending).
    fsutil.atomic_write_json(run_path / "metrics.json", metrics)
    return TrainResult(metrics, model_pending)


def write_model_file(run_path: Path) -> Path:
    """Assemble and save model.keras for a run whose trained part is its head: the frozen backbone (the same
    weights the features were extracted with) + head.weights.h5, end to end. Also repairs such a run whose
    model file was never written (the process was killed meanwhile, the disk was full)."""
    run = Run(run_path)
    cfg, classes = run.config(), run.labels()
    # A fine-tuned backbone lives only in the model.keras its run saved: the frozen one would not match its head.
    if cfg.mode == "scratch" or (run_path / "head_bottleneck.weights.h5").exists() or not classes or \
            not (run_path / "head.weights.h5").exists():
        raise TrainingError(f"Run {run_path.name} has no trained head on a frozen backbone to build a model file "
                            f"from; train it again.")
    head = _saved_head(run_path, cfg, len(classes))
    body = build_image_classifier(cached_extractor(cfg.backbone)[0], head)
    target = run_path / "model.keras"
    save_model(build_export_model(body, cfg.input_size(), len(classes)), target)
    return target


def verify_export(run_path: Path, max_images: int = 64) -> dict | None:
    """Reload the saved model.keras and compare its predictions on the validation images with the ones the run
    recorded; the result goes into metrics.json as `export_check`. Runs after the run is marked done, so it
    never delays the model being usable."""
    import pandas as pd

    predictions = run_path / "predictions.csv"
    if not predictions.exists():
        return None
    frame = pd.read_csv(predictions)
    frame = frame[frame["split"] == "val"].head(max_images)
    labels = fsutil.read_json(run_path / "labels.json", [])
    if frame.empty or not labels:
        return None
    expected = frame[[f"p_{c}" for c in labels]].to_numpy()
    check = check_export(run_path / "model.keras", [Path(p) for p in frame["path"]], expected)
    metrics = fsutil.read_json(run_path / "metrics.json", {}) or {}
    metrics["export_check"] = check
    fsutil.atomic_write_json(run_path / "metrics.json", metrics)
    return check
