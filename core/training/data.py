"""What training reads: the dataset's splits as arrays of labels, and images streamed from disk with tf.data."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.datasets import Dataset, Item
from core.features import image_dataset
from core.tfenv import keras, tf

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SplitData:
    items: list[Item]
    y: np.ndarray  # class indices

    @property
    def paths(self) -> list[Path]:
        return [it.path for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def keep(self, ok: np.ndarray) -> SplitData:
        """Only the items where `ok` is True (files that became unreadable since the scan are left out)."""
        return SplitData([it for it, keep in zip(self.items, ok) if keep], self.y[ok])


def split_data(ds: Dataset) -> dict[str, SplitData]:
    out = {}
    for split in SPLIT_NAMES:
        items = ds.split(split)
        out[split] = SplitData(items, np.array([ds.label_index(it.label) for it in items], dtype=np.int64))
    return out


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """'balanced': n / (k · count_c), so every class weighs the same in the loss whatever its size."""
    counts = np.bincount(y, minlength=n_classes)
    return {c: float(len(y) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


def labelled_images(data: SplitData, size: int, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """(images, labels) batches streamed from disk."""
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
