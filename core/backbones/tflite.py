"""A faster frozen feature extractor: the same EfficientNet-Lite weights, run by TFLite's XNNPACK CPU kernels.

TensorFlow's graph runtime reaches a fifth to a third of a 2-core CPU's matrix-multiply rate on EfficientNet-Lite
(depthwise convolutions are where it loses); XNNPACK, TFLite's default CPU engine for float models, runs the same
network over twice as fast (half to four fifths of that rate). See BENCHMARKS.md for the numbers.

The Keras extractor stays the reference. Its graph (weights frozen in) is converted once per backbone, weights
and TensorFlow version, checked against the Keras model on fixed test images, and cached as a `.tflite` beside
the converted weights in `weights_dir()` (atomic write). A conversion whose features differ by more than
`TOLERANCE` is recorded as rejected and never used. Any failure here means "no fast extractor": the caller
falls back to Keras, so features are the same either way (to about 1e-5).

Conversion takes a few seconds, so it is done inline only for jobs large enough to pay for it
(`MIN_IMAGES_TO_CONVERT`), or ahead of time with `python -m core.backbones.tflite`. Env `FEWSHOT_FAST_EXTRACT`:
"0" never uses it, "1" converts on first use whatever the job size, unset = automatic.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from core import fsutil
from core.backbones import build_feature_extractor, get_backbone, list_backbones, weights_dir
from core.tfenv import tf

log = logging.getLogger(__name__)

ENV = "FEWSHOT_FAST_EXTRACT"
SUPPORTED = tuple(spec.name for spec in list_backbones() if spec.fast_extract)  # a registry field (BackboneSpec)
TOLERANCE = 1e-3            # largest |tflite - keras| allowed, relative to the largest |feature| on the check images
MIN_IMAGES_TO_CONVERT = 400  # below this, converting (a few seconds, once) costs more than it saves now
_FORMAT = 1                  # bump to invalidate every cached conversion


@dataclass(frozen=True)
class Conversion:
    path: Path
    seconds: float
    max_abs_diff: float
    relative_diff: float
    accepted: bool


def mode() -> str:
    """'off', 'always' or 'auto', from env FEWSHOT_FAST_EXTRACT."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    if value in ("1", "on", "true", "yes", "always"):
        return "always"
    return "auto"


def _source_weights(backbone: str) -> Path:
    return weights_dir() / f"{backbone}.weights.h5"


@lru_cache(maxsize=8)
def _fingerprint_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256(f"{_FORMAT}:{tf.__version__}:".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def tflite_path(backbone: str) -> Path | None:
    """Where this backbone's conversion lives, keyed by its weights' content; None until the weights exist."""
    source = _source_weights(backbone)
    try:
        st = source.stat()
    except OSError:
        return None
    return weights_dir() / f"{backbone}-{_fingerprint_of(str(source), st.st_size, st.st_mtime_ns)}.tflite"


def _rejected_path(path: Path) -> Path:
    return path.with_suffix(".rejected.json")


def check_images(size: int) -> np.ndarray:
    """Four fixed float32 0..255 test images: noise, smooth gradients, blocks and a mid-grey."""
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:size, 0:size] / size
    smooth = np.stack([255 * xx, 255 * yy, 255 * (1 - xx) * yy], -1)
    blocks = np.kron(rng.uniform(0, 255, (8, 8, 3)), np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    return np.stack([rng.uniform(0, 255, (size, size, 3)), smooth, blocks,
                     np.full((size, size, 3), 127.0)]).astype(np.float32)


def convert(backbone: str) -> Conversion:
    """Convert the Keras extractor to TFLite, check it against Keras and cache it (or record its rejection)."""
    started = time.perf_counter()
    spec = get_backbone(backbone)
    model = build_feature_extractor(backbone)  # a fresh model: never one a fine-tuning may have changed
    path = tflite_path(backbone)
    if path is None:
        raise RuntimeError(f"no converted weights for {backbone} in {weights_dir()}")
    # Freezing the traced graph directly is several times quicker than TFLiteConverter.from_keras_model
    # (which exports a SavedModel first): ~7 s instead of ~25 s on 2 cores.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    forward = tf.function(lambda x: model([x], training=False))  # a list: the model's inputs are one
    concrete = forward.get_concrete_function(tf.TensorSpec([None, spec.input_size, spec.input_size, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    data = tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()

    images = check_images(spec.input_size)
    expected = model([images], training=False).numpy()
    got = TFLiteExtractor(data).predict(images)
    max_diff = float(np.abs(got - expected).max())
    relative = max_diff / max(float(np.abs(expected).max()), 1e-12)
    accepted = bool(np.isfinite(relative) and relative <= TOLERANCE)
    result = Conversion(path, time.perf_counter() - started, max_diff, relative, accepted)
    if accepted:
        fsutil.atomic_write_bytes(path, data)
        for old in weights_dir().glob(f"{backbone}-*.tflite"):  # earlier weights or TF versions
            if old != path:
                old.unlink(missing_ok=True)
    else:
        fsutil.atomic_write_json(_rejected_path(path), {"max_abs_diff": max_diff, "relative_diff": relative,
                                                        "tolerance": TOLERANCE})
        log.warning("TFLite %s features differ from Keras by %.3g (relative %.3g): not used.",
                    backbone, max_diff, relative)
    return result


def _interpreter_class():
    try:  # TF's own interpreter is deprecated in favour of this package; use it where installed
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        return tf.lite.Interpreter


def threads() -> int:
    """As many threads as TensorFlow's intra-op pool (core.tfenv), or every core where TF's default is used."""
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


class TFLiteExtractor:
    """float32 images (N, size, size, 3) in 0..255 → (N, feature_dim) features, a whole batch per invoke: XNNPACK
    spreads a batch over its threads (1.7x faster than one image at a time on 2 cores); a different batch size
    (the last, shorter batch) re-sizes the input tensor, which costs next to nothing after the first time."""

    def __init__(self, model: bytes | Path, num_threads: int | None = None):
        kwargs = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
        with warnings.catch_warnings():  # tf.lite.Interpreter warns that it is deprecated (it works in TF 2.21)
            warnings.simplefilter("ignore")
            self._interpreter = _interpreter_class()(num_threads=num_threads or threads(), **kwargs)
        inp, out = self._interpreter.get_input_details()[0], self._interpreter.get_output_details()[0]
        self._in, self._out = inp["index"], out["index"]
        self.input_shape = tuple(int(s) for s in inp["shape"][1:])
        self.feature_dim = int(out["shape"][-1])
        self._batch = 0
        self._lock = threading.Lock()  # an interpreter is not thread-safe

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError(f"expected images of shape (N, {self.input_shape}), got {images.shape}")
        if not len(images):
            return np.zeros((0, self.feature_dim), np.float32)
        with self._lock:
            if len(images) != self._batch:
                self._interpreter.resize_tensor_input(self._in, [len(images), *self.input_shape])
                self._interpreter.allocate_tensors()
                self._batch = len(images)
            self._interpreter.set_tensor(self._in, images)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._out).copy()

    __call__ = predict


@lru_cache(maxsize=4)
def _load(path: str) -> TFLiteExtractor:
    return TFLiteExtractor(Path(path))


def fast_extractor(backbone: str, n_images: int = 0) -> TFLiteExtractor | None:
    """The TFLite extractor for `backbone`, converting it first if the job of `n_images` pays for that;
    None when there is none to use (the caller uses Keras)."""
    setting = mode()
    if setting == "off" or backbone not in SUPPORTED:
        return None
    try:
        path = tflite_path(backbone)
        if path is not None and path.exists():
            try:
                return _load(str(path))
            except Exception as exc:  # damaged file: drop it, convert again below if worth it
                log.warning("Cached %s unusable (%s); converting again.", path, exc)
                _load.cache_clear()
                path.unlink(missing_ok=True)
        if path is not None and _rejected_path(path).exists():
            return None
        if setting != "always" and n_images < MIN_IMAGES_TO_CONVERT:
            return None
        if path is None:
            build_feature_extractor(backbone)  # writes the converted Keras weights the key is made from
        conversion = convert(backbone)
        return _load(str(conversion.path)) if conversion.accepted else None
    except Exception as exc:  # no TFLite here, a converter error, a read-only weights folder...
        log.warning("No fast extractor for %s (%s: %s); using Keras.", backbone, type(exc).__name__, exc)
        return None


def main(argv: list[str] | None = None) -> int:
    """`python -m core.backbones.tflite [BACKBONE...]`: convert ahead of time (default: every supported backbone)."""
    names = (argv if argv is not None else sys.argv[1:]) or list(SUPPORTED)
    for name in names:
        if name not in SUPPORTED:
            print(f"{name}: not supported (only {', '.join(SUPPORTED)}); Keras will be used.")
            continue
        path = tflite_path(name)
        if path is not None and path.exists():
            print(f"{name}: already converted ({path})")
            continue
        if path is None:
            build_feature_extractor(name)
        c = convert(name)
        print(json.dumps({"backbone": name, "path": str(c.path), "seconds": round(c.seconds, 2),
                          "max_abs_diff": c.max_abs_diff, "relative_diff": c.relative_diff,
                          "accepted": c.accepted}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
