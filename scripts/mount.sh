#!/usr/bin/env bash
# One command: set everything up, then mount vegafs on the embedded default store.
#   ./scripts/mount.sh [MOUNTPOINT]      (default: /mnt/vegafs)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
mnt=${1:-/mnt/vegafs}
SUDO=""
if [ "$(id -u)" -ne 0 ] && [ ! -w "$(dirname "$mnt")" ]; then SUDO="sudo"; fi
$SUDO mkdir -p "$mnt"
[ -n "$SUDO" ] && $SUDO chown "$(id -u):$(id -g)" "$mnt"
.venv/bin/vegafs mount "$mnt"
echo "vegafs is mounted at $mnt (store: ~/.local/share/vegafs/default). Unmount with: .venv/bin/vegafs umount $mnt"
