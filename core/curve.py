"""How many photos do I need? A learning curve from cached bottleneck features.

For each number of photos per class k, several draws of k training photos per class (seeded), a fresh dense head
trained on their cached features, and its accuracy on the fixed validation split. Nothing new goes through the
backbone (the features of every photo are cached once), so the whole curve costs seconds.

`learning_curve` is the pure part (arrays in, rows out); `dataset_curve` reads a dataset's split and features.
The head is trained for a fixed number of steps with no early stopping: stopping on the validation photos would
let them choose the model they then grade.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import FewShotError

DEFAULT_SHOTS = (1, 2, 5, 10, 20)
DEFAULT_DRAWS = 5
PAYING_POINTS = 0.02  # "more photos stop paying": the first point within 2 accuracy points of the best


class CurveError(FewShotError):
    """A learning curve that cannot be drawn (no validation photos, bad shots)."""


@dataclass(frozen=True)
class CurveSettings:
    shots: tuple[int, ...] = DEFAULT_SHOTS
    draws: int = DEFAULT_DRAWS
    seed: int = 0
    steps: int = 80            # Adam steps per head, whatever the number of photos (1 photo per class learns too)
    batch_size: int = 16
    lr: float = 1e-3
    dense_units: int = 256
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if not self.shots or any(k < 1 for k in self.shots):
            raise CurveError(f"shots must be whole numbers of at least 1, not {list(self.shots)}.")
        if not 1 <= self.draws <= 100:
            raise CurveError(f"draws = {self.draws} is not allowed: use 1..100.")


def parse_shots(text: str) -> tuple[int, ...]:
    """'1,2,5,10' → (1, 2, 5, 10); a readable error for anything else."""
    try:
        shots = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CurveError(f"--shots {text!r}: give whole numbers separated by commas, e.g. 1,2,5,10,20.") from None
    if not shots or min(shots) < 1:
        raise CurveError(f"--shots {text!r}: give whole numbers of at least 1, e.g. 1,2,5,10,20.")
    return shots


def shot_levels(requested: Sequence[int], class_sizes: Sequence[int]) -> list[int]:
    """The photos-per-class values to draw: those asked below the largest class, then 'all' (the largest class
    size: every training photo of every class)."""
    most = max(class_sizes)
    return sorted({k for k in requested if k < most}) + [most]


def draw_indices(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k photos of each class (all of a class that has fewer), without replacement."""
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        chosen.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


class _HeadTrainer:
    """The app's dense head (Dense(units, relu) → Dropout → softmax, or one sigmoid for two classes; Glorot
    kernels, zero biases; Adam with Keras' defaults; balanced class weights), trained for every draw of a level
    at once.

    `fit_head` traces a graph per head and runs one small step at a time: ~1 s of tracing and ~5 ms per step
    per head on a laptop, most of a curve's time. Here the draws of a level are one batch of heads (their
    weights stacked), so each step is one batched matmul per layer for all of them, and the graph is traced
    once for the whole curve (the data and batch order are its inputs)."""

    def __init__(self, dim: int, n_classes: int, settings: CurveSettings):
        from core.models import is_binary
        from core.tfenv import tf

        self.tf, self.settings = tf, settings
        self.binary = is_binary(n_classes)
        self.n_out = 1 if self.binary else n_classes
        shapes = [(dim, settings.dense_units), (settings.dense_units,), (settings.dense_units, self.n_out),
                  (self.n_out,)]
        draws = settings.draws
        self.weights = [tf.Variable(tf.zeros((draws, *shape))) for shape in shapes]
        self.slots = [tf.Variable(tf.zeros((draws, *shape)), trainable=False) for shape in shapes for _ in (0, 1)]
        lr, beta1, beta2, eps = settings.lr, 0.9, 0.999, 1e-7  # Keras' Adam defaults, as the app's head uses
        keep = 1.0 - settings.dropout

        def train(x, y, sample_weight, batches, seed):
            # x (draws, n, dim), y (draws, n), sample_weight (draws, n), batches (steps, draws, b) indices into n
            def step_fn(t, _):
                idx = batches[t]
                xb = tf.gather(x, idx, batch_dims=1)
                yb, wb = tf.gather(y, idx, batch_dims=1), tf.gather(sample_weight, idx, batch_dims=1)
                with tf.GradientTape() as tape:
                    hidden = tf.nn.relu(tf.matmul(xb, self.weights[0]) + self.weights[1][:, None, :])
                    if keep < 1.0:  # inverted dropout, as keras.layers.Dropout does while training
                        mask = tf.random.stateless_uniform(tf.shape(hidden), tf.stack([seed, t])) < keep
                        hidden = tf.where(mask, hidden / keep, 0.0)
                    logits = tf.matmul(hidden, self.weights[2]) + self.weights[3][:, None, :]
                    if self.binary:
                        per_photo = tf.nn.sigmoid_cross_entropy_with_logits(
                            tf.cast(yb[..., None], tf.float32), logits)[..., 0]
                    else:
                        per_photo = tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits)
                    # Keras' weighted loss: the mean over the batch of weight × loss, for each head.
                    loss = tf.reduce_sum(tf.reduce_mean(per_photo * wb, axis=1))
                grads = tape.gradient(loss, self.weights)
                step = tf.cast(t + 1, tf.float32)
                scale = lr * tf.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                for w, g, m, v in zip(self.weights, grads, self.slots[0::2], self.slots[1::2]):
                    m.assign(beta1 * m + (1 - beta1) * g)
                    v.assign(beta2 * v + (1 - beta2) * tf.square(g))
                    w.assign_sub(scale * m / (tf.sqrt(v) + eps))
                return t + 1, loss

            return tf.while_loop(lambda t, _: t < tf.shape(batches)[0], step_fn, (tf.constant(0), 0.0))[1]

        self._train = tf.function(train, autograph=False, input_signature=[
            tf.TensorSpec([draws, None, dim], tf.float32), tf.TensorSpec([draws, None], tf.int64),
            tf.TensorSpec([draws, None], tf.float32), tf.TensorSpec([None, draws, None], tf.int32),
            tf.TensorSpec([], tf.int32)])

    def fit_and_score(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, x_val: np.ndarray,
                      y_val: np.ndarray, seed: int) -> list[float]:
        """x (draws, n, dim), y and sample_weight (draws, n): one head per draw trained from a fresh start for
        `settings.steps` Adam steps; returns each head's validation accuracy."""
        tf, settings = self.tf, self.settings
        rng = np.random.default_rng(seed)
        draws, n = y.shape
        for w in self.weights:  # fresh heads: Glorot-uniform kernels, zero biases (what build_head makes)
            if len(w.shape) == 3:
                limit = np.sqrt(6.0 / (w.shape[1] + w.shape[2]))
                w.assign(rng.uniform(-limit, limit, w.shape).astype(np.float32))
            else:
                w.assign(tf.zeros_like(w))
        for slot in self.slots:
            slot.assign(tf.zeros_like(slot))
        batch = min(settings.batch_size, n)
        epochs = math.ceil(settings.steps * batch / n) + 1
        # Each head sees its photos in its own shuffled order, epoch after epoch, in full batches.
        order = np.stack([np.concatenate([rng.permutation(n) for _ in range(epochs)])[:settings.steps * batch]
                          for _ in range(draws)])
        batches = order.reshape(draws, settings.steps, batch).transpose(1, 0, 2)
        self._train(x.astype(np.float32), y.astype(np.int64), sample_weight.astype(np.float32),
                    batches.astype(np.int32), tf.constant(seed % 2**31, tf.int32))
        xv = tf.constant(x_val[None].astype(np.float32))
        hidden = tf.nn.relu(tf.matmul(tf.repeat(xv, draws, axis=0), self.weights[0]) + self.weights[1][:, None, :])
        logits = (tf.matmul(hidden, self.weights[2]) + self.weights[3][:, None, :]).numpy()
        predicted = (logits[..., 0] > 0).astype(int) if self.binary else logits.argmax(axis=2)
        return [float(acc) for acc in (predicted == y_val[None]).mean(axis=1)]


def learning_curve(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   n_classes: int, settings: CurveSettings = CurveSettings(),
                   progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One row per photos-per-class level: {shots, mean, min, max, n_val, draws, n_train, all}.
    `n_train` is the number of training photos per draw; `all` marks the level that uses every training photo.
    Draw d of level k takes its photos with the seed (seed, k, d): the same call gives the same curve."""
    from core.training.data import class_weights

    if len(y_val) == 0:
        raise CurveError("The learning curve needs validation photos: set a validation share above 0.")
    if len(y_train) == 0:
        raise CurveError("The learning curve needs training photos.")
    sizes = np.bincount(y_train, minlength=n_classes)
    levels = shot_levels(settings.shots, [int(s) for s in sizes if s])
    trainer = _HeadTrainer(x_train.shape[1], n_classes, settings)
    rows = []
    for done, k in enumerate(levels, start=1):
        picks = [draw_indices(y_train, k, np.random.default_rng([settings.seed, k, draw]))
                 for draw in range(settings.draws)]
        n_train = len(picks[0])  # every draw of a level has as many photos (k per class, or all of a class)
        weights = [class_weights(y_train[idx], n_classes) for idx in picks]
        accuracies = trainer.fit_and_score(
            np.stack([x_train[idx] for idx in picks]), np.stack([y_train[idx] for idx in picks]),
            np.stack([np.array([w[c] for c in y_train[idx]]) for idx, w in zip(picks, weights)]),
            x_val, y_val, seed=settings.seed * 1000 + k)
        if progress:
            progress(done, len(levels))
        rows.append({"shots": int(k), "mean": round(float(np.mean(accuracies)), 4),
                     "min": round(float(np.min(accuracies)), 4), "max": round(float(np.max(accuracies)), 4),
                     "n_val": int(len(y_val)), "draws": settings.draws, "n_train": int(n_train),
                     "all": k == levels[-1]})
    return rows


def enough_shots(rows: Sequence[dict], points: float = PAYING_POINTS) -> int | None:
    """Where more photos stop paying: the fewest photos per class whose mean accuracy is within `points` of the
    best mean on the curve."""
    if not rows:
        return None
    best = max(r["mean"] for r in rows)
    return min(r["shots"] for r in rows if r["mean"] >= best - points - 1e-9)


@dataclass
class DatasetCurve:
    rows: list[dict]
    classes: list[str]
    backbone: str
    n_extracted: int  # photos that went through the network for this curve (0 when all were cached)


def dataset_curve(data: str | Path, backbone: str, settings: CurveSettings = CurveSettings(),
                  val_split: float = 0.2, test_split: float = 0.0, split_seed: int = 0,
                  cache_root: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> DatasetCurve:
    """The learning curve of a dataset on its usual split (the one a run with these settings trains on): the
    training photos are drawn from, the validation photos grade. Features come from the cache (what is missing
    is extracted once and cached)."""
    from core.datasets import scan_dataset
    from core.features import extract_features
    from core.training.data import split_data
    from core.workspace import features_dir

    ds = scan_dataset(data, val_split, test_split, split_seed)
    splits = split_data(ds)
    paths = splits["train"].paths + splits["val"].paths
    result = extract_features(paths, backbone, cache_root or features_dir())
    n_train = len(splits["train"])
    ok_train, ok_val = result.ok[:n_train], result.ok[n_train:]
    rows = learning_curve(result.features[:n_train][ok_train], splits["train"].y[ok_train],
                          result.features[n_train:][ok_val], splits["val"].y[ok_val], len(ds.classes), settings,
                          progress)
    return DatasetCurve(rows, ds.classes, backbone, result.n_extracted)
