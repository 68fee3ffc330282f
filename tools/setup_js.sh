#!/usr/bin/env bash
# What the JavaScript tests (tests/test_js.py) need, installed when missing: node and npm,
# js/node_modules from js/package-lock.json, and Debian's chromium for the browser test.
# Installs system packages with apt-get only as root (as CI runs); otherwise says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup_js: missing $*; install them (Debian: apt-get install $*)" >&2
  fi
}
command -v npm >/dev/null || apt_install nodejs npm
[ -x /usr/bin/chromium ] || apt_install chromium
# The CPU binaries of onnxruntime-node ship in its package; its install script would download
# GPU ones, which needs more than the registry.
[ js/node_modules/.package-lock.json -nt js/package-lock.json ] || npm ci --prefix js --onnxruntime-node-install=skip --no-audit --no-fund --loglevel=error
