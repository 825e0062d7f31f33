"""ONNX export (`model.onnx`) with tf2onnx, checked with ONNX Runtime.

tf2onnx's `from_keras` relies on tf.keras internals that Keras 3 no longer has, so the network (from its Resizing
layer on, see core.export.base) is traced as a TensorFlow function and that graph is converted. Input "image":
N×size×size×3 float32 RGB 0..255 (any N); output: N×classes probabilities.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from core import fsutil
from core.export.base import ExportError, after_resize, input_size
from core.export.keras import load_model
from core.tfenv import tf

OPSET = 17  # ONNX Runtime (Python and Web) and every current runtime run it


def export_onnx(model_path: Path, out_path: Path) -> Path:
    try:
        import tf2onnx
    except ImportError as exc:
        raise ExportError("ONNX export needs tf2onnx (pip install -r requirements.txt).") from exc
    model = load_model(model_path)
    size = input_size(model)
    fixed = after_resize(model)
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
    forward = tf.function(lambda image: {"probabilities": fixed(image, training=False)}, input_signature=spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    except Exception as exc:  # tf2onnx raises whatever its graph rewriters raise
        raise ExportError(f"ONNX conversion failed: {exc}") from exc
    fsutil.atomic_write_bytes(out_path, proto.SerializeToString())
    return out_path


def predict_onnx(path: Path, batch: np.ndarray, model: bytes | None = None) -> np.ndarray:
    """Probabilities (N, classes) of the .onnx under ONNX Runtime (CPU) on N×size×size×3 float32 0..255
    (`model`: the ONNX file's bytes, when they are inside `path`, as in the web export's page)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError("checking the ONNX file needs onnxruntime (pip install -r requirements.txt).") \
            from exc
    try:
        session = onnxruntime.InferenceSession(str(path) if model is None else model,
                                               providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types (InvalidGraph, Fail...)
        raise ExportError(f"ONNX Runtime cannot load {path.name}: {exc}") from exc
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: batch[i:i + 16].astype(np.float32)})[0] for i in range(0, len(batch), 16)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))
