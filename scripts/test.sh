#!/usr/bin/env bash
# Set up (first time only), lint, and run the whole test suite, the real-browser test included.
# Extra arguments go to pytest (e.g. scripts/test.sh -k datasets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements-dev.txt
# Ray is optional for the app, not for the tests: tests/test_ray.py starts a loopback cluster and runs on it.
scripts/setup.sh requirements-ray.txt
if ! command -v chromium >/dev/null 2>&1; then
  # The browser test drives Debian's Chromium (Playwright's own browser download needs internet access).
  echo "Installing Chromium for the browser test…"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# Lint first: a finding fails the script before the (long) test run.
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
