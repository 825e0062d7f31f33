"""Activations of a backbone's frozen lower part, cached on disk: what fine-tuning on cached activations trains on.

Fine-tuning unfreezes only the top block, so everything below it computes the same output for the same (augmented)
image in every epoch. Cutting the backbone where the top block starts, the lower part runs once per image and
augmented copy, ever: the output at the cut (7×7×192 for Lite0) is cached, keyed like the feature cache by the
image's content hash, plus the backbone, the cut, the augmentation settings, the copy index and `FORMAT`, so a
second fine-tune of the same photos (a retrain after fixing labels, another seed) computes nothing.

Stored as float16: half the disk and memory, and the fine-tuned model's predictions move by about 1e-4 (measured
in BENCHMARKS.md); the exported model runs the lower part in float32 from the images, as always.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import fsutil, images
from core.augment import AugmentConfig, build_augmenter
from core.backbones import get_backbone, top_block_prefixes
from core.errors import FewShotError
from core.features import StopRequested, image_dataset
from core.tfenv import keras, tf

FORMAT = 1          # bump when what an entry holds changes (dtype, cut, preprocessing): old entries are not read
DTYPE = np.float16

Progress = Callable[[int, int], None]  # (done, total)


class CutError(FewShotError):
    """The backbone cannot be cut below its top block (the top block reads more than one tensor from below)."""


@dataclass
class BackboneCut:
    """A feature extractor cut where its top block starts. `top` is made of the extractor's own layer objects, so
    training `top` trains the extractor: the end-to-end model is `extractor` itself, no weights copied."""
    extractor: keras.Model
    lower: keras.Model   # image → activations at the cut (frozen)
    top: keras.Model     # activations → pooled features (the top block, then pooling)
    cut: str             # the name of the first top-block layer: part of the cache key

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.lower.output.shape[1:])


def cut_backbone(extractor: keras.Model, backbone: str, extra_blocks: int = 0) -> BackboneCut:
    """Cut `extractor` (a `build_feature_extractor(backbone)` model) before its first top-block layer (or, with
    `extra_blocks`, before that many blocks under the top one: `core.backbones.top_block_prefixes`)."""
    prefixes = top_block_prefixes(backbone, extra_blocks)
    layers = extractor.layers
    first = next((i for i, layer in enumerate(layers) if layer.name.startswith(prefixes)), None)
    if first is None:
        raise CutError(f"No layer of {extractor.name!r} starts with {prefixes}.")
    cut_tensor = layers[first].input
    if isinstance(cut_tensor, (list, tuple)):
        raise CutError(f"{layers[first].name} takes several inputs: no single tensor to cache.")
    lower = keras.Model(extractor.inputs, cut_tensor, name=f"{extractor.name}_lower")
    inputs = keras.Input(tuple(cut_tensor.shape[1:]), name="activations")
    # Re-call the layers from the cut on: a tensor map rather than a chain, so a residual inside the top block
    # works; a layer that reads a tensor from below the cut (other than the cut itself) cannot be cut here.
    mapped = {id(cut_tensor): inputs}
    for layer in layers[first:]:
        args = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        if any(id(a) not in mapped for a in args):
            raise CutError(f"{layer.name} reads a tensor from below the top block; the backbone cannot be cut "
                           f"at {layers[first].name}.")
        new_args = [mapped[id(a)] for a in args]
        mapped[id(layer.output)] = layer(new_args if isinstance(layer.input, (list, tuple)) else new_args[0])
    top = keras.Model(inputs, mapped[id(extractor.output)], name=f"{extractor.name}_top")
    return BackboneCut(extractor, lower, top, layers[first].name)


def activation_key(content_key: str, backbone: str, cut: str, augment: AugmentConfig | None, copy: int) -> str:
    # Copy 0 is the image itself: its entry does not depend on the augmentation settings.
    tag = hashlib.sha1(augment.to_json().encode()).hexdigest()[:10] if copy and augment is not None else "-"
    return hashlib.sha256(f"activations:{FORMAT}:{backbone}:{cut}:{tag}:{copy}:{content_key}".encode()).hexdigest()


class ActivationCache:
    """One float16 `.npy` per (image, copy), written atomically; a damaged or mis-shaped entry is recomputed."""

    def __init__(self, root: Path, backbone: str, cut: str, shape: tuple[int, ...]):
        self.dir = Path(root) / f"{backbone}-{cut}"
        self.shape = tuple(shape)
        self.write_error: str | None = None

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            value = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)
            return None
        if value.shape != self.shape or value.dtype != DTYPE or not np.isfinite(value).all():
            path.unlink(missing_ok=True)
            return None
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        """Like the feature cache: a cache that cannot be written only costs time, said once on stderr."""
        if self.write_error:
            return
        try:
            with fsutil.atomic_path(self._path(key), suffix=".npy") as tmp:
                np.save(tmp, np.asarray(value, dtype=DTYPE), allow_pickle=False)
        except OSError as exc:
            self.write_error = exc.strerror or str(exc)
            print(f"warning: the activation cache in {self.dir} cannot be written ({self.write_error}); going on "
                  f"without caching", file=sys.stderr, flush=True)

    def size_mib(self) -> float:
        """What the cache holds on disk for this backbone and cut, all datasets together."""
        if not self.dir.exists():
            return 0.0
        return sum(p.stat().st_size for p in self.dir.rglob("*.npy")) / 2**20


@dataclass
class Activations:
    values: np.ndarray          # (copies + 1, N, *shape) float16; copy 0 is the image itself
    ok: np.ndarray              # (N,) bool: False where the image could not be read
    n_computed: int = 0         # (image, copy) pairs that went through the lower part
    n_cached: int = 0           # (image, copy) pairs read from the cache
    failed: list[tuple[Path, str]] = field(default_factory=list)


def compute_activations(paths: Sequence[Path], content_keys: Sequence[str], cut: BackboneCut, backbone: str,
                        cache: ActivationCache | None, augment: AugmentConfig | None, copies: int,
                        batch_size: int = 32, progress: Progress | None = None,
                        should_stop: Callable[[], bool] | None = None) -> Activations:
    """Activations at the cut of each image and of `copies` augmented copies of it (copy c augmented by
    `build_augmenter(augment, seed=c)`), from the cache where present. Each image missing any copy is decoded
    once; every missing copy of it is made from that one decoded batch."""
    n = len(paths)
    values = np.zeros((copies + 1, n, *cut.shape), DTYPE)
    keys = [[activation_key(k, backbone, cut.cut, augment, c) for k in content_keys] for c in range(copies + 1)]
    missing = np.zeros((copies + 1, n), bool)
    for c in range(copies + 1):
        for i in range(n):
            value = cache.get(keys[c][i]) if cache is not None else None
            if value is None:
                missing[c, i] = True
            else:
                values[c, i] = value
    result = Activations(values, np.ones(n, bool), n_cached=int((~missing).sum()))
    todo = np.flatnonzero(missing.any(axis=0))
    total = int(missing.sum())
    if progress:
        progress(0, total)
    if not len(todo):
        return result
    forward = tf.function(lambda x: cut.lower(x, training=False), reduce_retracing=True)
    augmenters = [None] + [build_augmenter(augment, seed=c) for c in range(1, copies + 1)]
    start, done = 0, 0
    for batch, flags in image_dataset([paths[i] for i in todo], get_backbone(backbone).input_size, batch_size):
        if should_stop and should_stop():
            raise StopRequested()
        flags = flags.numpy()
        index = todo[start:start + len(flags)]
        start += len(flags)
        for j in np.flatnonzero(~flags):
            result.ok[index[j]] = False
            result.failed.append((Path(paths[index[j]]), images.check_image(paths[index[j]]) or "unreadable"))
        for c in range(copies + 1):
            rows = np.flatnonzero(missing[c, index] & flags)
            if not len(rows):
                continue
            x = tf.gather(batch, rows)
            if augmenters[c] is not None:
                x = augmenters[c](x, training=True)
            out = forward(x).numpy().astype(DTYPE)
            for row, value in zip(rows, out):
                values[c, index[row]] = value
                if cache is not None:
                    cache.put(keys[c][index[row]], value)
            result.n_computed += len(rows)
            done += len(rows)
        if progress:
            progress(done, total)
    return result
