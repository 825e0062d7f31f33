#!/usr/bin/env bash
# Set up (first time only) and start the app on the built-in demo dataset: http://localhost:${PORT:-8501}
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
exec .venv/bin/streamlit run app.py --server.port "${PORT:-8501}" "$@"
