"""Issue 13.5: the web export, `model.html` — one file with the ONNX model and ONNX Runtime Web inside, which
classifies photos in a browser with no server and no internet.

A tiny run (the small scratch convnet, one epoch) on photos made here keeps it fast: large JPEGs (which the app
decodes at reduced scale), an EXIF-rotated one, transparent and large PNGs. It is exported once, through the
command line; the page is then opened from disk (file://) in Debian's Chromium and compared with ONNX Runtime in
Python and with the app's own preprocessing. (The demo run's EfficientNet-Lite0 page: tried by hand, README.)
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.runs import Run

COLORS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
# name → (size, format): what each kind of photo exercises in the page's preprocessing (input side 150: the app
# decodes at ≥ 300 px, so a JPEG of ≥ 600 px is decoded at 1/2 scale and a PNG of ≥ 600 px is reduced 2×).
KINDS = {"big": ((700, 640), "JPEG"), "rotated": ((90, 60), "JPEG"), "alpha": ((64, 48), "PNG"),
         "bigpng": ((620, 610), "PNG"), "small": ((48, 40), "JPEG")}


def _photo(path: Path, color, size, fmt: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.clip(np.array(color, float) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    arr[h // 4: h // 2, w // 4: w // 2] //= 2  # a darker square: something for the orientation to move
    img = Image.fromarray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.stem.startswith("rotated"):
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90° clockwise to view": the app and the browser both apply it
        img.save(path, "JPEG", quality=90, exif=exif.tobytes())
    elif path.stem.startswith("alpha"):
        rgba = np.dstack([arr, np.linspace(0, 255, w).astype(np.uint8)[None, :].repeat(h, 0)])
        Image.fromarray(rgba, "RGBA").save(path, "PNG")  # composited on white by both
    else:
        img.save(path, fmt, quality=90) if fmt == "JPEG" else img.save(path, fmt)
    return path


@pytest.fixture(scope="module")
def web_run(tmp_path_factory, project_root) -> tuple[Run, subprocess.CompletedProcess]:
    """A finished tiny scratch run exported with `python -m core export RUN --format web` (run, the command)."""
    from core.export.web import runtime_files

    runtime_files()  # the set-up step fetched ONNX Runtime Web: else this says how
    root = tmp_path_factory.mktemp("web")
    data = root / "photos"
    for c, (name, color) in enumerate(COLORS.items()):
        for i, (kind, (size, fmt)) in enumerate(KINDS.items()):
            _photo(data / name / f"{kind}_{i}.{'jpg' if fmt == 'JPEG' else 'png'}", color, size, fmt, 100 * c + i)
    env = dict(os.environ, FEWSHOT_WORKSPACE=str(root / "ws"), TF_CPP_MIN_LOG_LEVEL="3")
    run_dir = root / "ws" / "runs" / "tiny"
    with pytest.MonkeyPatch.context() as patch:  # a module fixture: undone when the block ends
        patch.setenv("FEWSHOT_WORKSPACE", env["FEWSHOT_WORKSPACE"])
        from core.config import TrainConfig
        from core.engine import execute_run
        from core.runs import create_run

        run = create_run(TrainConfig(data=str(data), mode="scratch", epochs=1, batch_size=8, val_split=0.4),
                         run_dir)
        assert execute_run(run).state == "done"
    result = subprocess.run([sys.executable, "-m", "core", "export", str(run_dir), "--format", "web"],
                            capture_output=True, text=True, cwd=project_root, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return Run(run_dir), result


def _embedded(page: str, element_id: str) -> bytes:
    match = re.search(rf'<script type="application/octet-stream" id="{element_id}" data-encoding="(\w+)">'
                      rf'([^<]*)</script>', page)
    assert match, element_id
    data = base64.b64decode(match.group(2))
    return gzip.decompress(data) if match.group(1) == "gzip" else data


def test_web_export_is_one_page_with_the_model_and_the_runtime_inside(web_run):
    from core.export.web import ORT_WEB_VERSION, VENDOR_DIR, predict_web
    from core.images import load_resized

    run, result = web_run
    out = run.file(Run.WEB)
    assert result.stdout.strip() == str(out)
    assert "(its ONNX model, run by ONNX Runtime in Python): same answer as the app on 100.0%" in result.stderr
    check = run.exports()["web"]
    assert check["file"] == "model.html" and check["size_bytes"] == out.stat().st_size
    assert check["runtime"] == f"onnxruntime-web {ORT_WEB_VERSION}" and check["checked_with"] == "onnxruntime"
    assert check["n_images"] == len(run.predictions().query("split == 'val'")) >= 3
    assert check["same_top1"] == 1.0 and check["max_abs_diff"] < 1e-5

    page = out.read_text(encoding="utf-8")
    # The runtime, byte for byte the pinned package's: its ES module and its WebAssembly binary.
    assert _embedded(page, "fss-ort-js") == (VENDOR_DIR / "dist" / "ort.wasm.bundle.min.mjs").read_bytes()
    assert _embedded(page, "fss-ort-wasm") == (VENDOR_DIR / "dist" / "ort-wasm-simd-threaded.wasm").read_bytes()
    assert "ONNX Runtime Web v1.30.0" in _embedded(page, "fss-ort-js").decode()[:200]  # its licence header
    # The model: an ONNX file that predicts what model.keras predicts, raw.
    import onnxruntime

    from core.export import load_model, predict_files

    model = _embedded(page, "fss-model")
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    photos = list(run.predictions().query("split == 'val'")["path"])[:3]
    keras_probs, _ = predict_files(load_model(run.model_path), photos)
    batch = np.stack([load_resized(p, 150) for p in photos])
    onnx_probs = session.run(None, {"image": batch})[0]
    np.testing.assert_allclose(onnx_probs, keras_probs, atol=1e-5)
    np.testing.assert_allclose(predict_web(out, batch), onnx_probs, atol=1e-7)  # what the check runs
    # What the page knows, and that it loads nothing: no address outside itself, a policy that forbids any.
    config = json.loads(re.search(r'<script type="application/json" id="fss-config">(.*?)</script>', page).group(1))
    assert config["labels"] == run.labels() == ["blue", "green", "red"] and config["size"] == 150
    assert "default-src 'none'" in page and "connect-src blob: data:" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@@" not in page.replace("@@NAME@@", "")  # every slot filled


@pytest.mark.e2e
def test_the_page_classifies_photos_offline_in_chromium_as_onnxruntime_does(web_run, chromium):
    """Opened from disk with the network cut: 3 validation photos (an EXIF-rotated JPEG, a transparent PNG, a large
    PNG, as the split allows) set on its file input; each card's top class and probabilities (data attributes)
    equal ONNX Runtime's in Python on the app's resize of the same photo. (Large JPEGs, whose reduced decode the
    page approximates, are compared pixel by pixel in the next test.)"""
    from playwright.sync_api import expect

    from core.export.base import resized_images
    from core.export.web import predict_web

    run, _ = web_run
    val = list(run.predictions().query("split == 'val'")["path"])
    by_kind: dict[str, str] = {}
    for path in val:
        by_kind.setdefault(Path(path).stem.split("_")[0], path)
    exact = [p for p in val if not Path(p).stem.startswith("big_")]
    photos = list(dict.fromkeys([by_kind[k] for k in ("rotated", "alpha", "bigpng", "small") if k in by_kind]
                                + exact))[:3]
    assert len(photos) == 3

    context = chromium.new_context(offline=True)
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(run.file(Run.WEB).as_uri())
        expect(page.locator("#status")).to_have_attribute("data-state", "ready", timeout=120_000)
        page.set_input_files("#files", photos)
        done = page.locator("[data-testid=result][data-state=done]")
        expect(done).to_have_count(3, timeout=120_000)
        cards = [{k: done.nth(i).get_attribute(f"data-{k}") for k in ("name", "top", "probs", "ms")}
                 for i in range(3)]
        status = page.inner_text("#status")
    finally:
        context.close()
    assert not errors, errors
    assert [c["name"] for c in cards] == [Path(p).name for p in photos]
    assert all(u.startswith(("file://", "blob:")) for u in requests), requests  # nothing from anywhere else

    batch, ok = resized_images(photos, 150)
    assert ok.all()
    expected = predict_web(run.file(Run.WEB), batch)  # the page's own model, under ONNX Runtime in Python
    got = np.array([json.loads(c["probs"]) for c in cards])
    labels = run.labels()
    assert [c["top"] for c in cards] == [labels[i] for i in expected.argmax(1)]
    diff = float(np.abs(got - expected).max())
    print(f"browser vs onnxruntime: largest probability difference {diff:.1e}; ms per photo "
          f"{[c['ms'] for c in cards]}")
    assert diff < 1e-3
    assert "3 photos classified on this device" in status


@pytest.mark.e2e
def test_the_page_prepares_each_photo_as_the_app_does(web_run, chromium, tmp_path):
    """The page's model input (window.fewShot.modelInput) against core.images.load_resized, pixel by pixel:
    Chromium and Pillow decode the same pixels (EXIF orientation, transparency on white, no colour profile); a
    large JPEG, which Pillow decodes at reduced scale (DCT scaling), is approximated by a box average there."""
    from core.images import load_resized

    run, _ = web_run
    big = {"big8.jpg": ((2500, 2450), "JPEG"), "big2.png": ((700, 640), "PNG")}
    photos = [_photo(tmp_path / name, (120, 90, 200), size, fmt, i) for i, (name, (size, fmt)) in
              enumerate({**{f"{k}.{'jpg' if f == 'JPEG' else 'png'}": (s, f) for k, (s, f) in KINDS.items()},
                         **big}.items())]
    context = chromium.new_context()
    page = context.new_page()
    try:
        page.goto(run.file(Run.WEB).as_uri())
        page.wait_for_selector("#status[data-state=ready]", timeout=120_000)
        results = {}
        for path in photos:
            data = base64.b64encode(path.read_bytes()).decode()
            values = page.evaluate("""async ([data, name]) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                return Array.from(await window.fewShot.modelInput(new File([bytes], name)));
            }""", [data, path.name])
            got = np.array(values, np.float32).reshape(150, 150, 3)
            diff = np.abs(got - load_resized(path, 150))
            results[path.name] = (float(diff.max()), float(diff.mean()))
    finally:
        context.close()
    print({k: f"max {m:.3f}, mean {a:.4f}" for k, (m, a) in results.items()})
    for name, (most, mean) in results.items():
        if name.startswith("big") and name.endswith(".jpg"):  # decoded at 1/2 or 1/8 scale by Pillow
            assert most < 6 and mean < 1, (name, most, mean)
        else:
            assert most < 0.01, (name, most, mean)


def test_web_export_without_the_runtime_says_how_to_get_it(web_run, monkeypatch, tmp_path):
    """Without the set-up step's runtime (no npm), the export stops at once with what to do."""
    import shutil

    from core.export import ExportError, export_format, web

    run_dir = tmp_path / "run"
    shutil.copytree(web_run[0].path, run_dir, ignore=shutil.ignore_patterns(Run.WEB, Run.EXPORTS))
    monkeypatch.setattr(web, "VENDOR_DIR", tmp_path / "no-runtime")
    with pytest.raises(ExportError, match=r"ONNX Runtime Web 1\.30\.0.*scripts/setup\.sh.*npm"):
        export_format(Run(run_dir), "web")
    assert not (run_dir / Run.WEB).exists() and Run(run_dir).exports() == {}
