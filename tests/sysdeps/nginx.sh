#!/usr/bin/env bash
# Installs nginx (Debian's nginx-light, else nginx) for the remote-cache tests and benchmark
# when it is missing. Without apt-get it says so and the tests that need nginx are skipped.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tests/sysdeps/nginx.sh: no apt-get here; install nginx (with the WebDAV module) yourself, or the remote-cache tests are skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq nginx-light >/dev/null || $SUDO apt-get install -y -qq nginx >/dev/null
