#!/usr/bin/env bash
# Install a headless browser (and graphviz) for the tree-visualisation tests (pytest -m browser).
#
#   .ci/install_browser.sh          # idempotent: returns at once when all are installed
#   FORCE=1 .ci/install_browser.sh  # reinstall
#
# Debian's `chromium` and `chromium-driver` packages: the driver at /usr/bin/chromedriver matches
# the browser's version exactly, so selenium never needs selenium-manager (which would try to
# download a driver). Runs unattended (CI=true, no stdin); needs root or passwordless sudo.
# The Python side (`selenium`) comes with the project's `dev` extra.
set -euo pipefail

if [ "${FORCE:-0}" != "1" ] && command -v chromium >/dev/null 2>&1 \
    && command -v chromedriver >/dev/null 2>&1 && command -v dot >/dev/null 2>&1; then
    echo "install_browser: chromium, chromedriver and graphviz already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install_browser: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; install chromium and chromedriver yourself" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
    --no-install-recommends)

# `env` keeps DEBIAN_FRONTEND through sudo, which resets the environment.
APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get)
"${APT[@]}" update -q </dev/null
# fonts-liberation: readable glyphs in screenshots on a bare image; graphviz: `dot` checks the
# output of Tree.to_dot().
"${APT[@]}" install "${APT_OPTS[@]}" chromium chromium-driver fonts-liberation graphviz </dev/null

# (the chromium launcher script may print a harmless "[: ...: unexpected operator" line)
chromium --version 2>/dev/null
chromedriver --version
dot -V
