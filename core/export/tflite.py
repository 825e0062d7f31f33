"""TFLite exports: float32 (`model.tflite`) and full-integer int8 (`model-int8.tflite`, for phones and
microcontrollers), and running either on images already resized (see core.export.base for why).

The int8 file has uint8 input (the resized RGB pixels, 0..255, rounded) and uint8 output (probabilities, scaled:
see `dequantize`); every op inside is int8, as microcontroller runtimes (TFLite Micro) and NPUs require. Its
quantisation ranges come from the run's own training photos (a representative dataset): no photo it is checked on
(the validation photos) is used to calibrate it.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from core import fsutil, images
from core.backbones.tflite import _interpreter_class, threads
from core.export.base import ExportError, after_resize, input_size
from core.export.keras import load_model
from core.quiet import captured_output
from core.tfenv import tf

MAX_CALIBRATION_IMAGES = 100  # enough for stable activation ranges; each is one float forward pass


def export_tflite(model_path: Path, out_path: Path) -> Path:
    """Convert the run's model to TFLite with a fixed 1×size×size×3 input (float32 0..255)."""
    fixed = after_resize(load_model(model_path), batch_size=1)
    _write(tf.lite.TFLiteConverter.from_keras_model(fixed), out_path)
    return out_path


def export_tflite_int8(model_path: Path, out_path: Path, calibration_paths: Sequence[str | Path]) -> Path:
    """Full-integer quantisation calibrated on `calibration_paths` (the run's training photos)."""
    model = load_model(model_path)
    size = input_size(model)
    paths = list(calibration_paths)[:MAX_CALIBRATION_IMAGES]
    if not paths:
        raise ExportError("int8 quantisation needs some of the run's training photos to calibrate on; none of "
                          "them is listed (split.json) or still on disk.")

    def representative() -> Iterator[list[np.ndarray]]:
        for path in paths:
            try:
                yield [images.load_resized(path, size)[None]]
            except images.ImageError:
                continue  # a photo deleted or damaged since training: calibrate on the others

    converter = tf.lite.TFLiteConverter.from_keras_model(after_resize(model, batch_size=1))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # fail rather than fall back
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    _write(converter, out_path)
    return out_path


def _write(converter, out_path: Path) -> None:
    try:
        # ~250 lines of converter output would otherwise land in the server's terminal.
        with warnings.catch_warnings(), captured_output():
            warnings.simplefilter("ignore")
            data = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise ExportError(f"TFLite conversion failed: {exc}") from exc
    fsutil.atomic_write_bytes(out_path, data)


def predict_tflite(path: Path, batch: np.ndarray) -> np.ndarray:
    """Probabilities (N, classes) of a .tflite (float or int8) on N×size×size×3 float32 0..255 images."""
    with warnings.catch_warnings():  # tf.lite.Interpreter warns that it is deprecated (it works in TF 2.21)
        warnings.simplefilter("ignore")
        interpreter = _interpreter_class()(model_path=str(path), num_threads=threads())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    probs = []
    for image in batch:  # the file's input is one image (batch 1), as on a phone
        interpreter.set_tensor(inp["index"], quantize(image[None], inp))
        interpreter.invoke()
        probs.append(dequantize(interpreter.get_tensor(out["index"]), out)[0])
    return np.array(probs).reshape(len(batch), -1)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """float input → the tensor's type: real = scale * (q - zero_point), so q = round(real / scale) + zero_point."""
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return q.astype(np.float64)
    scale, zero = detail["quantization"]
    return scale * (q.astype(np.float64) - zero)
