"""Issue 13.5: the conversions of a real run (the demo, EfficientNet-Lite0) — ONNX through the command line,
int8 TFLite in-process — each checked on the validation photos, and the snippet shown with each download runs.
One conversion per format: each takes tens of seconds. (The float TFLite: tests/test_training.py.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core.export.formats import FORMATS, snippet
from core.runs import Run


def _run_snippet(fmt_name: str, run_dir, photo, tmp_path, project_root) -> str:
    """The download's usage snippet, run as a user would: a fresh Python in a folder with the file, labels.json
    and photo.jpg (no code of this project importable)."""
    folder = tmp_path / f"user-{fmt_name}"
    folder.mkdir()
    shutil.copy(run_dir / FORMATS[fmt_name].file, folder)
    shutil.copy(run_dir / Run.LABELS, folder)
    shutil.copy(photo, folder / "photo.jpg")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", snippet(FORMATS[fmt_name], 224)], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0]  # "label probability"


def _a_val_photo(run: Run):
    row = run.predictions().query("split == 'val' and correct").iloc[0]
    return row["path"], row["label"]


def test_onnx_export_from_the_command_line_is_checked_with_onnxruntime(run_copy, project_root, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "core", "export", str(run_copy), "--format", "onnx"],
                            capture_output=True, text=True, cwd=project_root, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run_copy / "model.onnx")
    assert "same answer as the app on 100.0%" in result.stderr  # the check, printed
    run = Run(run_copy)
    check = run.exports()["onnx"]
    assert check["n_images"] == len(run.predictions().query("split == 'val'"))
    assert check["same_top1"] == 1.0 and check["max_abs_diff"] < 1e-4
    assert check["accuracy"] == check["app_accuracy"] >= 0.9
    assert check["size_bytes"] == (run_copy / "model.onnx").stat().st_size > 1e6

    # Independently of the check: ONNX Runtime on a photo equals model.keras on the same photo, raw.
    import onnxruntime

    from core.export import load_model
    from core.images import load_resized, load_rgb

    path, label = _a_val_photo(run)
    session = onnxruntime.InferenceSession(str(run_copy / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"image": load_resized(path, 224)[None]})[0][0]
    raw = load_rgb(path, max_side=448)[None].astype(np.float32)  # any size: model.keras resizes it itself
    keras_probs = load_model(run.model_path).predict(raw, verbose=0)[0]  # as in the README
    np.testing.assert_allclose(onnx_probs, keras_probs, atol=1e-4)
    assert run.labels()[int(onnx_probs.argmax())] == label
    assert _run_snippet("onnx", run_copy, path, tmp_path, project_root) == label


def test_int8_tflite_is_integer_only_four_times_smaller_and_reports_its_accuracy_cost(run_copy, project_root,
                                                                                      tmp_path):
    from core.export import export_format
    from core.tfenv import tf

    run = Run(run_copy)
    check = export_format(run, "tflite-int8")
    out = run_copy / "model-int8.tflite"
    assert check == run.exports()["tflite-int8"] and check["file"] == out.name
    assert check["size_bytes"] == out.stat().st_size < 0.35 * check["keras_size_bytes"]
    assert check["n_images"] > 10
    assert check["same_top1"] >= 0.9 and check["accuracy"] >= check["app_accuracy"] - 0.1
    assert 0 < check["max_abs_diff"] < 0.5  # quantised: not exact, but close

    interpreter = tf.lite.Interpreter(model_path=str(out))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    # Integer only: every op's weights and activations are 8-bit (biases 32-bit), nothing float is left inside.
    kinds = {d["dtype"] for d in interpreter.get_tensor_details() if d["name"]}
    assert np.float32 not in kinds, kinds

    path, label = _a_val_photo(run)
    assert _run_snippet("tflite-int8", run_copy, path, tmp_path, project_root) == label


def test_unknown_format_and_missing_model_are_readable_errors(run_copy, project_root):
    from core.export import ExportError, export_format

    (run_copy / "model.keras").unlink()
    with pytest.raises(ExportError, match="no model file"):
        export_format(Run(run_copy), "onnx")
    with pytest.raises(ExportError, match="unknown export format"):
        export_format(Run(run_copy), "coreml")
    result = subprocess.run([sys.executable, "-m", "core", "export", str(run_copy), "--format", "onnx"],
                            capture_output=True, text=True, cwd=project_root, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error:") and "model.keras" in last
    assert json.loads((run_copy / "metrics.json").read_text())  # nothing else touched
