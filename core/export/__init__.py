"""The exported model and its conversions, each checked against what the app predicted.

`model.keras` (core.export.keras) takes raw RGB images of any size (0..255) and returns one probability per class,
in the order of `labels.json`; it is plain Keras. The conversions (TFLite float and int8, ONNX, a web page running
the ONNX file: core.export.formats lists them) take images already resized (core.export.base says why);
core.export.check converts, re-runs each file on the validation photos and records the result in exports.json.

The names below load on first use (PEP 562), so that pages can read core.export.formats without TensorFlow.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "ExportError": "base",
    "check_export": "keras", "load_model": "keras", "predict_files": "keras", "save_model": "keras",
    "export_tflite": "tflite", "export_tflite_int8": "tflite",
    "export_onnx": "onnx",
    "export_web": "web",
    "export_format": "check",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'core.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"core.export.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
