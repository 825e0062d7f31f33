"""A lean training loop for the dense head on cached features.

`model.fit` spends ~80 ms per epoch on bookkeeping (iterators, callbacks, a separate evaluate call) — more than
the actual maths on a few hundred feature vectors. Here a whole epoch is one compiled graph call, so 30 epochs
take a fraction of a second and a retrain after fixing a few labels feels instant.
Semantics match `fit` with EarlyStopping(restore_best_weights=True) and `class_weight`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.models import is_binary
from core.tfenv import keras, tf


@dataclass
class HeadFitConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    patience: int | None = 8   # None: no early stopping
    seed: int = 0


EpochHook = Callable[[dict], bool]  # receives the epoch's row; returns True to stop training


def fit_head(head: keras.Model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
             cfg: HeadFitConfig, class_weight: dict[int, float] | None = None,
             on_epoch: EpochHook | None = None) -> list[dict]:
    """Train `head` in place; returns the per-epoch history. The best-val_loss weights are restored at the end."""
    n_classes = int(head.output_shape[-1]) if not is_binary_head(head) else 2
    binary = is_binary(n_classes)
    loss_fn = keras.losses.BinaryCrossentropy() if binary else keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.Adam(cfg.lr)
    weights_per_class = tf.constant([class_weight.get(c, 1.0) if class_weight else 1.0 for c in range(n_classes)],
                                    tf.float32)
    x_t, y_t = tf.constant(x, tf.float32), tf.constant(y, tf.int64)
    steps = int(np.ceil(len(x) / cfg.batch_size))
    variables = head.trainable_variables
    optimizer.build(variables)  # its slots made now, not inside the first trace (which would then trace twice)

    def predictions_loss(xb, yb, training: bool):
        out = head(xb, training=training)
        target = tf.cast(tf.reshape(yb, (-1, 1)), tf.float32) if binary else yb
        sample_w = tf.gather(weights_per_class, yb)
        return out, loss_fn(target, out, sample_weight=sample_w)

    # autograph=False with an explicit while_loop: AutoGraph's source transformation of this function and of the
    # Keras code it calls took ~1 s of a ~2 s retrain; the graph (and so every number) is the same.
    @tf.function(reduce_retracing=True, autograph=False)
    def train_epoch(order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def step_fn(step, total_loss, correct):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, yb = tf.gather(x_t, idx), tf.gather(y_t, idx)
            with tf.GradientTape() as tape:
                out, loss = predictions_loss(xb, yb, True)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return (step + 1, total_loss + loss * tf.cast(tf.shape(idx)[0], tf.float32),
                    correct + tf.reduce_sum(tf.cast(predicted_classes(out, binary) == yb, tf.int64)))

        _, total_loss, correct = tf.while_loop(lambda step, *_: step < steps, step_fn,
                                               (tf.constant(0), tf.constant(0.0), tf.constant(0, tf.int64)))
        n = tf.cast(tf.shape(order)[0], tf.float32)
        return total_loss / n, tf.cast(correct, tf.float32) / n

    @tf.function(reduce_retracing=True, autograph=False)
    def evaluate(xv: tf.Tensor, yv: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        out, _ = predictions_loss(xv, yv, False)
        target = tf.cast(tf.reshape(yv, (-1, 1)), tf.float32) if binary else yv
        loss = loss_fn(target, out)  # unweighted, like fit's val_loss
        return loss, tf.reduce_mean(tf.cast(predicted_classes(out, binary) == yv, tf.float32))

    rng = np.random.default_rng(cfg.seed)
    has_val = x_val is not None and len(x_val) > 0
    if has_val:
        xv_t, yv_t = tf.constant(x_val, tf.float32), tf.constant(y_val, tf.int64)
    history: list[dict] = []
    best, best_weights, waited = np.inf, None, 0
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        loss, acc = train_epoch(tf.constant(rng.permutation(len(x)), tf.int64))
        row = {"epoch": epoch + 1, "loss": float(loss), "accuracy": float(acc), "val_loss": None,
               "val_accuracy": None, "lr": cfg.lr}
        if has_val:
            val_loss, val_acc = evaluate(xv_t, yv_t)
            row["val_loss"], row["val_accuracy"] = float(val_loss), float(val_acc)
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        monitored = row["val_loss"] if has_val else row["loss"]
        if monitored < best:
            best, best_weights, waited = monitored, head.get_weights(), 0
        else:
            waited += 1
        stop = on_epoch(row) if on_epoch else False
        if stop or (cfg.patience is not None and waited > 0 and waited >= cfg.patience):
            break
    if best_weights is not None:
        head.set_weights(best_weights)
    return history


def is_binary_head(head: keras.Model) -> bool:
    return int(head.output_shape[-1]) == 1


def predicted_classes(out: tf.Tensor, binary: bool) -> tf.Tensor:
    if binary:
        return tf.cast(tf.reshape(out, (-1,)) > 0.5, tf.int64)
    return tf.argmax(out, axis=1, output_type=tf.int64)
