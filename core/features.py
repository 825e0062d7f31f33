"""Bottleneck features: each image goes through the frozen backbone once, ever.

The cache key is the image's content hash, so a second run extracts nothing, and a renamed or relabelled image
(a file moved to another class folder) costs nothing either. One small `.npy` per entry, written atomically:
two runs sharing the cache never see a torn file, and a damaged entry is detected and recomputed.
Misses go through the TFLite copy of the backbone where one is ready (`core.backbones.tflite`: same features to ~1e-5,
2-4x faster), else through the Keras model.
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from core import fsutil, images
from core.augment import AugmentConfig, build_augmenter
from core.backbones import build_feature_extractor, get_backbone
from core.backbones.tflite import fast_extractor
from core.tfenv import tf

Progress = Callable[[int, int], None]  # (done, total)


class StopRequested(Exception):
    """Raised inside long loops when the user asked the run to stop."""


class FeatureCache:
    def __init__(self, root: Path, backbone: str, input_size: int):
        self.dir = Path(root) / f"{backbone}-{input_size}"
        self.dim = get_backbone(backbone).feature_dim
        self.write_error: str | None = None  # set when the cache cannot be written (disk full, read-only)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            vec = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # damaged entry: drop it, it will be recomputed
            return None
        if vec.shape != (self.dim,) or vec.dtype != np.float32 or not np.isfinite(vec).all():
            path.unlink(missing_ok=True)
            return None
        return vec

    def put(self, key: str, vec: np.ndarray) -> None:
        """Store one entry. The cache only saves time: if it cannot be written (a full disk, a read-only folder)
        the features are still used, the run goes on uncached, and the reason is said once in the run's log."""
        if self.write_error:
            return
        try:
            with fsutil.atomic_path(self._path(key), suffix=".npy") as tmp:
                np.save(tmp, np.asarray(vec, dtype=np.float32), allow_pickle=False)
        except OSError as exc:
            self.write_error = exc.strerror or str(exc)
            print(f"warning: the feature cache in {self.dir} cannot be written ({self.write_error}); going on "
                  f"without caching", file=sys.stderr, flush=True)

    def __len__(self) -> int:
        return sum(1 for p in self.dir.rglob("*.npy") if not p.name.startswith(".")) if self.dir.exists() else 0


@dataclass
class FeatureResult:
    features: np.ndarray            # (N, D), rows in the order of the paths given (failed rows are zeros)
    ok: np.ndarray                  # (N,) bool: False where the image could not be read
    n_extracted: int = 0            # cache misses computed by this call
    seconds: float = 0.0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    engine: str = ""                # what computed the misses: "tflite" (core.backbones.tflite) or "keras"


_extractor_lock = threading.Lock()


def cached_extractor(backbone: str):
    """The frozen extractor and a compiled forward function; built once per process."""
    with _extractor_lock:  # built once even when two threads (the app's sessions) ask at once
        return _build_extractor(backbone)


@lru_cache(maxsize=2)
def _build_extractor(backbone: str):
    model = build_feature_extractor(backbone)
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return model, forward


def _decode_for(size: int):
    def decode(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return images.load_rgb(path.decode(), max_side=2 * size), True
        except images.ImageError:
            return np.zeros((size, size, 3), np.uint8), False
    return decode


EXTRACT_BATCH = 32  # images per forward pass: XNNPACK spreads a batch over its threads


def image_dataset(paths: Sequence[Path], size: int, batch_size: int) -> tf.data.Dataset:
    """(images float32 size×size×3 in 0..255, ok flags) batches, decoded in parallel, never all in memory."""
    decode = _decode_for(size)

    def load(path: tf.Tensor):
        image, ok = tf.numpy_function(decode, [path], [tf.uint8, tf.bool], stateful=False)
        image.set_shape([None, None, 3])
        return images.resize_tensor_for_model(image, size), tf.reshape(ok, [])

    # No tf.data autotuning: its model thread sleeps in doubling periods (up to seconds), and finishing an
    # iterator waits for it, so a pass over the images often ended with a 2.6 or 5 s stall (BENCHMARKS.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    return (ds.map(load, num_parallel_calls=os.cpu_count() or 2, deterministic=True).batch(batch_size).prefetch(2)
            .with_options(options))


def augmented_key(content_key: str, augment: AugmentConfig, copy: int) -> str:
    tag = hashlib.sha1(augment.to_json().encode()).hexdigest()[:10]
    return hashlib.sha256(f"{content_key}:{tag}:{copy}".encode()).hexdigest()


def extract_features(paths: Sequence[Path], backbone: str, cache_root: Path | None, batch_size: int = EXTRACT_BATCH,
                     progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                     augment: AugmentConfig | None = None, copy: int = 0,
                     keys: Sequence[str] | None = None) -> FeatureResult:
    """Features for `paths`, from the cache where present; misses are computed in batches and cached.

    With `augment`, features of augmented copy number `copy` (deterministic per image and copy) are returned and
    cached under their own keys, so cached training keeps augmentation.
    """
    start = time.perf_counter()
    spec = get_backbone(backbone)
    cache = FeatureCache(cache_root, backbone, spec.input_size) if cache_root else None
    content_keys = list(keys) if keys is not None else [images.content_hash(p) for p in paths]
    if augment is not None:
        content_keys = [augmented_key(k, augment, copy) for k in content_keys]

    features = np.zeros((len(paths), spec.feature_dim), np.float32)
    ok = np.ones(len(paths), bool)
    missing: list[int] = []
    for i, key in enumerate(content_keys):
        vec = cache.get(key) if cache is not None else None
        if vec is None:
            missing.append(i)
        else:
            features[i] = vec
    result = FeatureResult(features, ok)
    if progress:
        progress(0, len(missing))
    if missing:
        fast = fast_extractor(backbone, len(missing))  # same features, 2-4x faster; None: use Keras
        if fast is not None:
            forward, result.engine = (lambda x: fast(np.asarray(x))), "tflite"
        else:
            keras_forward = cached_extractor(backbone)[1]
            forward, result.engine = (lambda x: keras_forward(x).numpy()), "keras"
        augmenter = build_augmenter(augment, seed=copy) if augment is not None else None
        done = 0
        for batch, flags in image_dataset([paths[i] for i in missing], spec.input_size, batch_size):
            if should_stop and should_stop():
                raise StopRequested()
            if augmenter is not None:
                batch = augmenter(batch, training=True)
            vecs = forward(batch)
            for vec, flag in zip(vecs, flags.numpy()):
                index = missing[done]
                done += 1
                if not flag:
                    ok[index] = False
                    result.failed.append((Path(paths[index]), images.check_image(paths[index]) or "unreadable"))
                    continue
                features[index] = vec
                if cache is not None:
                    cache.put(content_keys[index], vec)
            if progress:
                progress(done, len(missing))
        result.n_extracted = int(ok[missing].sum())
    result.seconds = time.perf_counter() - start
    return result
