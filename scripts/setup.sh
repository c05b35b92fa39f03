#!/usr/bin/env bash
# Set up everything vegafs needs on a Debian/Ubuntu machine, idempotently:
# system packages (FUSE 3 and its headers for pyfuse3, attr tools, and the real
# tools the tests drive), a virtualenv in .venv, and the package itself.
# Runs as root, or as a user with sudo for the system packages.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(fuse3 libfuse3-dev pkg-config attr gcc python3-dev python3-venv
          rsync sqlite3 git tar acl)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# /dev/fuse must exist for mounts (containers may need --device /dev/fuse).
if [ ! -e /dev/fuse ]; then
    $SUDO modprobe fuse 2>/dev/null || true
fi
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing: load the fuse module or pass the device into this container" >&2; exit 1; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.vegafs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing vegafs and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/vegafs --version))"
