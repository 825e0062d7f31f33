"""Convert a run's model to one format and check the file: re-run it on the validation photos and compare with
what the app predicted there (the run's recorded probabilities, which model.keras reproduces: its own check).

The result, recorded in the run's exports.json and shown next to the download: the file's size, the largest
difference in any probability, the share of photos where it gives the same answer (top-1), and its accuracy on
the validation photos beside the app's. For the int8 file that accuracy difference is what quantisation costs.
The web page is checked as ONNX: the model inside it, under ONNX Runtime in Python (`checked_with`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.export.base import ExportError, resized_images
from core.export.formats import FORMATS
from core.runs import Run

MAX_CHECK_IMAGES = 200


def _convert(run: Run, name: str, out: Path) -> None:
    from core.export import onnx, tflite, web

    if name == "tflite":
        tflite.export_tflite(run.model_path, out)
    elif name == "tflite-int8":
        tflite.export_tflite_int8(run.model_path, out, run.split_paths("train"))
    elif name == "onnx":
        onnx.export_onnx(run.model_path, out)
    elif name == "web":
        web.export_web(run, out)
    else:
        raise ExportError(f"unknown export format {name!r} (known: {', '.join(FORMATS)}).")


def _predictor(name: str) -> Callable[[Path, np.ndarray], np.ndarray]:
    from core.export import onnx, tflite, web

    # The page runs the ONNX model inside it: that model is checked, with ONNX Runtime in Python (the page
    # itself, in a real browser: tests/test_export_web.py).
    return {"onnx": onnx.predict_onnx, "web": web.predict_web}.get(name, tflite.predict_tflite)


def export_format(run: Run, name: str) -> dict:
    """Write `run`'s file for format `name` (see core.export.formats) and return (and record) its check."""
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r} (known: {', '.join(FORMATS)}).")
    if not run.has_model():
        raise ExportError(f"{run.model_path} does not exist: the run has no model file to convert.")
    out = run.file(FORMATS[name].file)
    model_mtime = run.model_path.stat().st_mtime_ns
    started = time.perf_counter()
    _convert(run, name, out)
    convert_seconds = time.perf_counter() - started
    check = {"format": name, "file": out.name, "size_bytes": out.stat().st_size,
             "keras_size_bytes": run.model_path.stat().st_size, "convert_seconds": round(convert_seconds, 1),
             "model_mtime_ns": model_mtime, "created_at": time.time(), **check_file(run, name, out)}
    if name == "web":
        from core.export.web import ORT_WEB_VERSION

        check.update(runtime=f"onnxruntime-web {ORT_WEB_VERSION}", checked_with="onnxruntime")
    run.record_export(name, check)
    return check


def check_file(run: Run, name: str, path: Path) -> dict:
    """Compare the file's predictions on the run's validation photos with the ones the run recorded."""
    frame, labels = run.predictions(), run.labels()
    if frame is None or not labels:
        return {"n_images": 0}
    frame = frame[frame["split"] == "val"].head(MAX_CHECK_IMAGES)
    if frame.empty:
        return {"n_images": 0}
    batch, ok = resized_images(list(frame["path"]), run.config().input_size())
    if not ok.any():
        return {"n_images": 0}
    got = _predictor(name)(path, batch)
    expected = frame[[f"p_{c}" for c in labels]].to_numpy(dtype=np.float64)[ok]
    truth = np.array([labels.index(label) for label in frame["label"]])[ok]
    return {"n_images": int(ok.sum()), "max_abs_diff": float(np.abs(got - expected).max()),
            "same_top1": float((got.argmax(1) == expected.argmax(1)).mean()),
            "accuracy": float((got.argmax(1) == truth).mean()),
            "app_accuracy": float((expected.argmax(1) == truth).mean())}
