#!/usr/bin/env bash
# The README's first command: install, start the embedded stack and every TapMask service,
# then run the main job (a sample clip uploaded, clicked, blurred and downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
tapmask dev up
tapmask demo --out out
echo "the stack keeps running: 'tapmask dev status' shows it, 'tapmask dev down' stops it (activate with '. .venv/bin/activate')"
