#!/usr/bin/env bash
# Create .venv and install the requirements into it; does nothing when they are already installed.
# Usage: scripts/setup.sh [requirements file]   (default requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$python" --version)…"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(basename "$req")"
want="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing $req into .venv (first time: a few minutes)…"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
# ONNX Runtime Web, which the web export (core/export/web.py) embeds in model.html: the pinned npm package's
# WebAssembly build, unpacked into vendor/onnxruntime-web/ (ignored by git). Without npm only that export is missing.
ort_web="1.30.0"
ort_web_sha256="d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71"
ort_web_dir="vendor/onnxruntime-web"
if [ "$(cat "$ort_web_dir/.version" 2>/dev/null)" != "$ort_web" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "Fetching ONNX Runtime Web $ort_web for the web export (npm, 33 MB)…"
    tmp="$(mktemp -d)"
    if (cd "$tmp" && npm pack --silent "onnxruntime-web@$ort_web" >/dev/null 2>&1) \
        && echo "$ort_web_sha256  $tmp/onnxruntime-web-$ort_web.tgz" | sha256sum --check --status; then
      rm -rf "$ort_web_dir" && mkdir -p "$ort_web_dir"
      tar -xzf "$tmp/onnxruntime-web-$ort_web.tgz" -C "$ort_web_dir" --strip-components=1 package/package.json \
        package/dist/ort.wasm.bundle.min.mjs package/dist/ort-wasm-simd-threaded.wasm
      echo "$ort_web" > "$ort_web_dir/.version"
    else
      echo "(could not fetch onnxruntime-web $ort_web from npm: the web export is unavailable until scripts/setup.sh succeeds)"
    fi
    rm -rf "$tmp"
  else
    echo "(npm is not installed: the web export needs it once — apt-get install npm, then run scripts/setup.sh again)"
  fi
fi
