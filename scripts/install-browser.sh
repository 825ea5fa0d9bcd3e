#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/integration/test_web.py, driven by
# playwright-core): installed with apt-get when it is missing and we are root. No browser is
# ever downloaded from elsewhere. When it cannot be installed, it says why and the browser
# tests skip with that reason; it never stops the other tests.
set -uo pipefail
CHROMIUM="${TAPMASK_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "note: $CHROMIUM is missing and this is not root: the browser tests will be skipped" >&2
  echo "      (install Debian's chromium package: sudo apt-get install -y chromium)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: $CHROMIUM is missing and there is no apt-get: the browser tests will be skipped" >&2
  exit 0
fi
echo "installing Debian's chromium for the browser tests…"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq chromium </dev/null >/dev/null 2>&1; then
  apt-get update -qq </dev/null >/dev/null 2>&1 || true
  apt-get install -y -qq chromium </dev/null >/dev/null 2>&1 \
    || echo "warning: apt-get could not install chromium: the browser tests will be skipped" >&2
fi
[ -x "$CHROMIUM" ] && echo "chromium: $("$CHROMIUM" --version 2>/dev/null)"
exit 0
