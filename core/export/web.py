"""The web export (`model.html`): one self-contained page that classifies photos in a browser, offline.

The page (web_template.html) embeds the run's ONNX model (core.export.onnx, gzipped) and ONNX Runtime Web
(`onnxruntime-web` on npm, pinned: its WebAssembly build, the ES module bundle and its .wasm, gzipped), all base64.
It runs one thread (`ort.env.wasm.numThreads = 1`), so it needs no cross-origin isolation and works opened from
disk (file://); its Content-Security-Policy lets it load nothing from anywhere. It decodes and resizes each photo
as the app does (core.images: EXIF orientation, the reduced decode of large photos, TensorFlow's antialiased
bilinear resize) and feeds the ONNX input: size×size RGB float 0..255.

The runtime comes from scripts/setup.sh (`npm pack`, into vendor/onnxruntime-web/, ignored by git). The check
(core.export.check) is the ONNX one, on the model taken back out of the page: ONNX Runtime in Python on the
validation photos; tests/test_export_web.py runs the page itself in Chromium and compares the two.
"""
from __future__ import annotations

import base64
import gzip
import html
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from core import fsutil
from core.export.base import ExportError
from core.runs.folder import Run

ORT_WEB_VERSION = "1.30.0"  # scripts/setup.sh fetches this version
VENDOR_DIR = Path(__file__).resolve().parents[2] / "vendor" / "onnxruntime-web"
RUNTIME_JS = "dist/ort.wasm.bundle.min.mjs"      # the API and the wasm glue in one ES module (73 KB)
RUNTIME_WASM = "dist/ort-wasm-simd-threaded.wasm"  # the CPU runtime (14 MB; 3.7 MB gzipped)
TEMPLATE = Path(__file__).with_name("web_template.html")
_MODEL_RE = re.compile(r'<script type="application/octet-stream" id="fss-model" data-encoding="gzip">([^<]*)'
                       r'</script>')


def runtime_files(vendor: Path | None = None) -> tuple[Path, Path]:
    """(the runtime's ES module, its .wasm) from the pinned package (in VENDOR_DIR), or a readable ExportError."""
    vendor = vendor or VENDOR_DIR
    how = (f"The web export needs ONNX Runtime Web {ORT_WEB_VERSION} (npm package onnxruntime-web) in {vendor}: "
           f"run scripts/setup.sh, which fetches it with npm (install Node.js/npm first, e.g. apt-get install npm).")
    try:
        version = json.loads((vendor / "package.json").read_text()).get("version")
    except (OSError, ValueError):
        raise ExportError(how) from None
    if version != ORT_WEB_VERSION:
        raise ExportError(f"{vendor} holds onnxruntime-web {version}, not {ORT_WEB_VERSION}. {how}")
    js, wasm = vendor / RUNTIME_JS, vendor / RUNTIME_WASM
    if not (js.is_file() and wasm.is_file()):
        raise ExportError(f"{vendor} lacks {RUNTIME_JS} or {RUNTIME_WASM}. {how}")
    return js, wasm


def export_web(run: Run, out_path: Path) -> Path:
    """Write `run`'s page: its ONNX model (the run's model.onnx when it is current, else converted now) inside."""
    js, wasm = runtime_files()  # before a conversion of tens of seconds
    if run.conversion_is_current(Run.ONNX):
        model = run.file(Run.ONNX).read_bytes()
    else:
        from core.export.onnx import export_onnx

        with tempfile.TemporaryDirectory(prefix="fewshot-web-") as tmp:
            model = export_onnx(run.model_path, Path(tmp) / Run.ONNX).read_bytes()
    page = render(model, js.read_bytes(), wasm.read_bytes(), page_config(run))
    fsutil.atomic_write_bytes(out_path, page.encode("utf-8"))
    return out_path


def page_config(run: Run) -> dict:
    """What the page shows about the model: its classes and input size, what it is, how it did in the app."""
    from core.runs.titles import run_title

    config, metrics = run.config(), run.metrics() or {}
    if config.mode == "scratch":
        what = "a small convolutional network trained from scratch"
    else:
        from core.backbones import get_backbone

        what = f"{get_backbone(config.backbone).title} features + a trained classifier ({config.mode})"
    checked = None
    if metrics.get("n_val") and metrics.get("val_accuracy") is not None:
        checked = (f"accuracy {metrics['val_accuracy']:.1%} on the run's {metrics['n_val']} validation photos "
                   f"(in Few-Shot Studio)")
    return {"title": run_title(run), "labels": run.labels(), "size": config.input_size(), "model": what,
            "checked": checked, "made": time.strftime("%Y-%m-%d %H:%M"), "run": run.id}


def render(model: bytes, runtime_js: bytes, runtime_wasm: bytes, config: dict) -> str:
    """The page: the template with `config` (JSON) and the three embedded files filled in."""
    def b64(data: bytes, packed: bool = False) -> str:
        return base64.b64encode(gzip.compress(data, compresslevel=9, mtime=0) if packed else data).decode("ascii")

    values = {
        "TITLE": html.escape(str(config["title"])),
        "ORT_VERSION": ORT_WEB_VERSION,
        # Inside <script>: "</" would end it early, so it is written "<\/" (the same JSON string).
        "CONFIG": json.dumps(config, ensure_ascii=False).replace("</", "<\\/"),
        "ORT_JS": b64(runtime_js),
        "ORT_WASM": b64(runtime_wasm, packed=True),
        "MODEL": b64(model, packed=True),
    }
    return re.sub(r"@@([A-Z_]+)@@", lambda m: values[m.group(1)] if m.group(1) in values else m.group(0),
                  TEMPLATE.read_text(encoding="utf-8"))


def embedded_model(path: Path) -> bytes:
    """The ONNX file inside a page written by `export_web`."""
    match = _MODEL_RE.search(path.read_text(encoding="utf-8"))
    if not match:
        raise ExportError(f"{path.name} has no embedded model: not a page made by the web export.")
    return gzip.decompress(base64.b64decode(match.group(1)))


def predict_web(path: Path, batch: np.ndarray) -> np.ndarray:
    """Probabilities (N, classes) of the page's embedded ONNX model under ONNX Runtime in Python (CPU)."""
    from core.export.onnx import predict_onnx

    return predict_onnx(path, batch, model=embedded_model(path))
