#!/usr/bin/env bash
# Set up (first time only) and start the app on the built-in demo dataset: http://localhost:${PORT:-8501}
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
# Once: convert the default backbone's ImageNet weights and its fast (TFLite) feature extractor, so the first
# training extracts at full speed. A failure here only means the first training does it, more slowly.
prepared=".venv/.prepared-efficientnet_lite0"
if [ ! -e "$prepared" ]; then
  echo "Preparing the default backbone (once, about 15 s)…"
  if TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -m core.backbones.tflite efficientnet_lite0 >/dev/null 2>&1; then
    touch "$prepared"
  else
    echo "(could not prepare it now; the first training will)"
  fi
fi
# The warm engine (one worker process that keeps TensorFlow loaded for every training) starts now, beside the
# server, so the first training does not wait for it; the app restarts it whenever it is needed.
.venv/bin/python -c "from core.engine import ensure_worker; ensure_worker()" || echo "(the engine starts with the first training)"
exec .venv/bin/streamlit run app.py --server.port "${PORT:-8501}" "$@"
