"""The export formats: what each file is, where it goes in the run folder, and how to use it. No TensorFlow here:
the Predictions page reads this to draw its downloads."""
from __future__ import annotations

from dataclasses import dataclass

from core.runs.folder import Run


@dataclass(frozen=True)
class ExportFormat:
    name: str        # the CLI's --format value and the key in exports.json
    file: str        # the Run constant: its file name in the run folder
    title: str       # what the download button says
    purpose: str     # one line: who it is for
    input: str       # what it takes
    snippet: str     # a few lines that use it ({size} is the model's input side); "" for none
    language: str = "python"
    mime: str = "application/octet-stream"
    usage: str = ""  # one line under the download, for a file that is used without code


_RESIZE = """img = Image.open("photo.jpg").convert("RGB").resize(({size}, {size}), Image.BILINEAR)  # antialiased"""

FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat(
        "tflite", Run.TFLITE, "TFLite (float)", "Phones (Android, iOS) and small computers: the full accuracy.",
        "one {size}×{size} RGB image, float32 0–255 (resize it first)",
        '''import json, numpy as np
from PIL import Image
try:  # LiteRT, TFLite's runtime (pip install ai-edge-litert)
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    import tensorflow as tf
    Interpreter = tf.lite.Interpreter
interpreter = Interpreter("model.tflite"); interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
''' + _RESIZE + '''
interpreter.set_tensor(inp["index"], np.asarray(img, np.float32)[None]); interpreter.invoke()
probs = interpreter.get_tensor(out["index"])[0]
print(json.load(open("labels.json"))[probs.argmax()], probs.max())'''),
    ExportFormat(
        "tflite-int8", Run.TFLITE_INT8, "TFLite int8", "Microcontrollers, NPUs and old phones: about 4× smaller, "
        "integer-only.",
        "one {size}×{size} RGB image, uint8 0–255; output uint8 (probability = scale × (q − zero_point))",
        '''import json, numpy as np
from PIL import Image
try:  # LiteRT, TFLite's runtime (pip install ai-edge-litert); TFLite Micro on a microcontroller
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    import tensorflow as tf
    Interpreter = tf.lite.Interpreter
interpreter = Interpreter("model-int8.tflite"); interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
''' + _RESIZE + '''
interpreter.set_tensor(inp["index"], np.asarray(img, np.uint8)[None]); interpreter.invoke()
scale, zero = out["quantization"]
probs = scale * (interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero)
print(json.load(open("labels.json"))[probs.argmax()], probs.max())'''),
    ExportFormat(
        "onnx", Run.ONNX, "ONNX", "Any ONNX runtime: C++, C#, Java, JavaScript, Python; servers and desktops.",
        "\"image\": N×{size}×{size}×3 RGB, float32 0–255 (resize it first)",
        '''import json, numpy as np, onnxruntime
from PIL import Image
session = onnxruntime.InferenceSession("model.onnx")
''' + _RESIZE + '''
probs = session.run(None, {"image": np.asarray(img, np.float32)[None]})[0][0]
print(json.load(open("labels.json"))[probs.argmax()], probs.max())'''),
    ExportFormat(
        "web", Run.WEB, "Web page (offline)", "Anyone with a browser, on a computer or a phone: one HTML file with "
        "the model and its runtime inside; nothing to install, no server, no internet.",
        "photos of any size (JPEG, PNG, WebP…), dropped on the page or chosen; it resizes them as the app does",
        "", mime="text/html",
        usage="Open it in any browser (double-click it), then drop photos on it: it classifies them on the device, "
              "offline, and shows each with its class bars."),
)}


def snippet(fmt: ExportFormat, size: int) -> str:
    return fmt.snippet.replace("{size}", str(size))


def input_text(fmt: ExportFormat, size: int) -> str:
    return fmt.input.replace("{size}", str(size))
