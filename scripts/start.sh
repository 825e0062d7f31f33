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
exec .venv/bin/streamlit run app.py --server.port "${PORT:-8501}" "$@"
