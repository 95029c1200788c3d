#!/usr/bin/env bash
# Install Debian's headless-capable Chromium (used by the report's browser test) when it is missing.
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root (or sudo) and the Debian archive.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "ensure_chromium: /usr/bin/chromium is missing and this is not root; install the 'chromium' package" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
test -x /usr/bin/chromium
