#!/usr/bin/env bash
# Installs what tests/test_browser.py needs: Debian's Chromium (driven by Playwright through
# /usr/bin/chromium, so Playwright's own browser download is never needed) and the pinned
# Playwright Python package into the project venv. Safe to re-run.
set -euo pipefail
VENV_PY="${VENV_PY:-.venv/bin/python}"

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if command -v apt-get >/dev/null 2>&1; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-dejavu-core
    else
        echo "browser.sh: no apt-get; install Chromium yourself (the browser test will skip)" >&2
    fi
fi
command -v chromium >/dev/null 2>&1 && chromium --version || true

if [ -x "$VENV_PY" ]; then
    "$VENV_PY" -m pip install --quiet -c requirements/constraints.txt "playwright==1.65.2"
fi
