#!/usr/bin/env bash
# The README's second command: install, then run every test (unit, integration against a real
# embedded stack that the tests start and stop themselves, property tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-browser.sh   # Debian's chromium for the browser tests
. .venv/bin/activate
exec python -m pytest -ra "$@"
