#!/usr/bin/env bash
# Builds the web page (web/ → web/dist, served by the API at "/"): `npm ci` from the committed
# package-lock.json (skipped when node_modules already matches it), then a type check and
# `vite build`. Without Node.js/npm it says so and leaves the API to run without the page.
set -euo pipefail
cd "$(dirname "$0")/../web"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "warning: Node.js and npm were not found, so the web page (web/) was not built; the REST API" >&2
  echo "         works without it. Install Node.js >= 20.19 with npm, then run: bash scripts/build-web.sh" >&2
  exit 0
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "error: the web page needs Node.js >= 20.19 (found $(node --version)); install a newer Node.js" >&2
  exit 1
fi

stamp=node_modules/.tapmask-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
npm run --silent build >/dev/null
echo "web page built into $(pwd)/dist"
