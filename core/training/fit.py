"""`model.fit` for the image models (scratch, fine-tune), with the callback that writes the run folder."""
from __future__ import annotations

import time

import numpy as np

from core.config import TrainConfig
from core.models import is_binary
from core.reporting import Reporter
from core.tfenv import keras, tf
from core.training.data import SplitData, class_weights, labelled_images


def rounded(value) -> float | None:
    return None if value is None else round(float(value), 5)


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
            "loss": rounded(logs.get("loss")), "accuracy": rounded(logs.get("accuracy")),
            "val_loss": rounded(logs.get("val_loss")), "val_accuracy": rounded(logs.get("val_accuracy")),
            "lr": rounded(float(np.asarray(lr))), "seconds": round(time.perf_counter() - self.epoch_start, 3),
        })


def _tf_targets(y, n_classes: int):
    return tf.cast(y, tf.float32) if is_binary(n_classes) else y


def fit_on_images(model: keras.Model, cfg: TrainConfig, splits: dict[str, SplitData], size: int, n_classes: int,
                  reporter: Reporter, stage: str, epochs: int) -> float:
    """Fit an end-to-end image model on images streamed from disk, with the run's callbacks: progress and history
    to the run folder, stop requests, and early stopping that restores the best weights. Returns its seconds."""
    def batches(split: str, shuffle: bool) -> tf.data.Dataset:
        ds = labelled_images(splits[split], size, cfg.batch_size, shuffle=shuffle, seed=cfg.seed)
        return ds.map(lambda x, y: (x, _tf_targets(y, n_classes)))

    validation = batches("val", shuffle=False) if len(splits["val"]) else None
    weights = class_weights(splits["train"].y, n_classes) if cfg.class_weights == "balanced" else None
    steps = int(np.ceil(len(splits["train"]) / cfg.batch_size))
    callbacks: list = [RunCallback(reporter, stage, epochs, steps, epoch_offset=len(reporter.history))]
    if cfg.early_stopping and epochs > 1:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss" if validation is not None else "loss", patience=cfg.patience,
            restore_best_weights=True))
    reporter.phase(stage, f"{stage}: epoch 1 of {epochs}")
    started = time.perf_counter()
    # The datasets arrive shuffled (a bounded buffer), so fit's own shuffle is off.
    model.fit(batches("train", shuffle=True), validation_data=validation, epochs=epochs, class_weight=weights,
              callbacks=callbacks, verbose=0, shuffle=False)
    return time.perf_counter() - started


def evaluate_on_images(model: keras.Model, cfg: TrainConfig, data: SplitData, size: int,
                       n_classes: int) -> tuple[float, float]:
    """(loss, accuracy) of a compiled image model on `data`, unweighted like fit's val_loss."""
    batches = labelled_images(data, size, cfg.batch_size, shuffle=False, seed=cfg.seed)
    loss, accuracy = model.evaluate(batches.map(lambda x, y: (x, _tf_targets(y, n_classes))), verbose=0)
    return float(loss), float(accuracy)

