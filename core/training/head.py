"""A lean training loop for the dense head on cached features, in NumPy.

The head is Dense(units, relu) → Dropout → softmax (one sigmoid for two classes) on a few hundred feature
vectors: a few MFLOP per epoch. `model.fit` spent ~80 ms per epoch on bookkeeping, and a traced TensorFlow loop
(this module's previous form) ~1 s tracing a new graph for every head plus 25–60 ms per epoch dispatching small
ops to thread pools that a loaded 2-core machine wakes late: most of a warm retrain. The same maths in NumPy, on
one BLAS thread, has neither cost (~5–10 ms per epoch on the demo, loaded).

Semantics are Keras' own, step for step: the head's initial weights (Keras' initialisers, seeded by the caller),
batches in a seeded permutation per epoch, inverted dropout while training, the weighted mean cross-entropy from
the logits (what Keras computes for a softmax/sigmoid output), Adam with Keras' defaults (β1 0.9, β2 0.999,
ε 1e-7), and EarlyStopping(restore_best_weights=True) on validation loss (training loss without validation
photos). Only the dropout masks' random draws differ from Keras' (same distribution, NumPy's generator).
"""
from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from core.tfenv import keras, tf

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam's defaults


@dataclass
class HeadFitConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    patience: int | None = 8   # None: no early stopping
    seed: int = 0


EpochHook = Callable[[dict], bool]  # receives the epoch's row; returns True to stop training


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries: made once (it inspects every loaded library: 20-80 ms
    in a process with TensorFlow), None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController  # installed with scikit-learn
    except ImportError:  # pragma: no cover - scikit-learn is pinned
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Small matmuls on one thread: handing 16×1280 blocks to a second BLAS thread costs more than it saves, and
    on a loaded machine the thread that should help wakes late (an epoch took 120–700 ms instead of ~15 ms)."""
    controller = _blas_controller()
    if controller is None:  # pragma: no cover
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


class _Head:
    """The head's maths in NumPy: its weights, forward pass, loss and gradients, and Adam's state."""

    def __init__(self, head: keras.Model):
        dense, out = head.get_layer("head_dense"), head.get_layer("head_predictions")
        self.keep = 1.0 - float(head.get_layer("head_dropout").rate)
        self.binary = int(out.units) == 1
        self.weights = [np.array(w, np.float32) for w in (dense.kernel, dense.bias, out.kernel, out.bias)]
        self.m = [np.zeros_like(w) for w in self.weights]
        self.v = [np.zeros_like(w) for w in self.weights]
        # Scratch space for the gradients and Adam's update, allocated once: a fresh 1.3 MB temporary per step
        # and operation (the first kernel's size) cost more in page faults than the arithmetic.
        self.grads = [np.zeros_like(w) for w in self.weights]
        self.scratch = [np.zeros_like(w) for w in self.weights]
        self.iterations = 0

    def logits(self, x: np.ndarray, rng: np.random.Generator | None = None):
        w1, b1, w2, b2 = self.weights
        pre = x @ w1 + b1
        hidden = np.maximum(pre, 0.0)
        scale = None
        if rng is not None and self.keep < 1.0:  # inverted dropout, as keras.layers.Dropout while training
            scale = (rng.random(hidden.shape, dtype=np.float32) < self.keep).astype(np.float32) / np.float32(self.keep)
            hidden = hidden * scale
        return hidden @ w2 + b2, pre, hidden, scale

    def per_photo_loss(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cross-entropy per photo, d loss / d logits per photo), from the logits as Keras computes them."""
        if self.binary:
            z = z[:, 0]
            t = y.astype(np.float32)
            loss = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
            return loss, (_sigmoid(z) - t)[:, None]
        shifted = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        rows = np.arange(len(y))
        loss = log_norm - shifted[rows, y]
        grad = np.exp(shifted - log_norm[:, None])
        grad[rows, y] -= 1.0
        return loss, grad

    def predicted(self, z: np.ndarray) -> np.ndarray:
        return (z[:, 0] > 0).astype(np.int64) if self.binary else z.argmax(axis=1)

    def train_step(self, xb: np.ndarray, yb: np.ndarray, wb: np.ndarray, lr: float,
                   rng: np.random.Generator) -> tuple[float, int]:
        """One Adam step on a batch; returns (the batch's weighted mean loss, photos it got right)."""
        z, pre, hidden, scale = self.logits(xb, rng)
        loss, dz = self.per_photo_loss(z, yb)
        n = np.float32(len(yb))
        dz = (dz * (wb / n)[:, None]).astype(np.float32)  # Keras' weighted loss: sum(w · loss) / batch size
        w1, _, w2, _ = self.weights
        dh = dz @ w2.T
        if scale is not None:
            dh *= scale
        dh *= pre > 0
        g1, gb1, g2, gb2 = self.grads
        np.matmul(xb.T, dh, out=g1)
        np.sum(dh, axis=0, out=gb1)
        np.matmul(hidden.T, dz, out=g2)
        np.sum(dz, axis=0, out=gb2)
        self.iterations += 1
        t = self.iterations
        alpha = np.float32(lr * np.sqrt(1 - ADAM_BETA_2 ** t) / (1 - ADAM_BETA_1 ** t))
        for w, g, m, v, tmp in zip(self.weights, self.grads, self.m, self.v, self.scratch):
            # m ← m + (g − m)(1 − β1); v ← v + (g² − v)(1 − β2); w ← w − α m / (√v + ε), in place
            np.subtract(g, m, out=tmp)
            tmp *= np.float32(1 - ADAM_BETA_1)
            m += tmp
            np.multiply(g, g, out=tmp)
            tmp -= v
            tmp *= np.float32(1 - ADAM_BETA_2)
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += np.float32(ADAM_EPSILON)
            np.divide(m, tmp, out=tmp)
            tmp *= alpha
            w -= tmp
        return float((wb * loss).sum() / n), int((self.predicted(z) == yb).sum())

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Unweighted mean loss and accuracy, dropout off (like fit's val_loss and val_accuracy)."""
        z = self.logits(x)[0]
        loss, _ = self.per_photo_loss(z, y)
        return float(loss.mean()), float((self.predicted(z) == y).mean())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def fit_head(head: keras.Model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
             cfg: HeadFitConfig, class_weight: dict[int, float] | None = None,
             on_epoch: EpochHook | None = None) -> list[dict]:
    """Train `head` (a `core.models.build_head` head) in place from its current weights; returns the per-epoch
    history. The best-val_loss weights are restored at the end."""
    net = _Head(head)
    n_classes = 2 if net.binary else int(head.output_shape[-1])
    per_class = np.array([class_weight.get(c, 1.0) if class_weight else 1.0 for c in range(n_classes)], np.float32)
    x = np.ascontiguousarray(x, np.float32)
    y = np.asarray(y, np.int64)
    weights_of = per_class[y]
    has_val = x_val is not None and len(x_val) > 0
    if has_val:
        x_val, y_val = np.ascontiguousarray(x_val, np.float32), np.asarray(y_val, np.int64)
    order_rng = np.random.default_rng(cfg.seed)  # the batch order: as before, one permutation per epoch
    dropout_rng = np.random.default_rng([cfg.seed, 1])
    history: list[dict] = []
    best, best_weights, waited = np.inf, None, 0
    with one_blas_thread():
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            order = order_rng.permutation(len(x))
            total_loss, correct = 0.0, 0
            for start in range(0, len(x), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                loss, right = net.train_step(x[idx], y[idx], weights_of[idx], cfg.lr, dropout_rng)
                total_loss += loss * len(idx)
                correct += right
            row = {"epoch": epoch + 1, "loss": total_loss / len(x), "accuracy": correct / len(x), "val_loss": None,
                   "val_accuracy": None, "lr": cfg.lr}
            if has_val:
                row["val_loss"], row["val_accuracy"] = net.evaluate(x_val, y_val)
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            monitored = row["val_loss"] if has_val else row["loss"]
            if monitored < best:
                best, best_weights, waited = monitored, [w.copy() for w in net.weights], 0
            else:
                waited += 1
            stop = on_epoch(row) if on_epoch else False
            if stop or (cfg.patience is not None and waited > 0 and waited >= cfg.patience):
                break
    head.set_weights(best_weights if best_weights is not None else net.weights)
    return history


def head_probabilities(head: keras.Model, x: np.ndarray) -> np.ndarray:
    """The head's output (class probabilities; one sigmoid column for two classes) on features `x`, dropout off,
    in NumPy: what `head(x, training=False)` gives, without a TensorFlow call per split."""
    net = _Head(head)
    with one_blas_thread():
        z = net.logits(np.ascontiguousarray(x, np.float32))[0]
    if net.binary:
        return _sigmoid(z).astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def is_binary_head(head: keras.Model) -> bool:
    return int(head.output_shape[-1]) == 1


def predicted_classes(out: tf.Tensor, binary: bool) -> tf.Tensor:
    if binary:
        return tf.cast(tf.reshape(out, (-1,)) > 0.5, tf.int64)
    return tf.argmax(out, axis=1, output_type=tf.int64)
