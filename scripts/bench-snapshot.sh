#!/usr/bin/env bash
# The snapshot workload, side by side in one run: kiln's FUSE overlay, kernel overlayfs
# in a user namespace, kiln's copy backend, Debian's fuse-overlayfs, and a plain
# directory. Phases: extract a tree into an empty mount, then on a fresh mount over it:
# stat every file, read every file, copy a tenth and chmod it, modify 1 % and delete 1 %,
# commit into a zstd layer. Prints seconds per phase and the ratios kiln-fuse/fuse-overlayfs
# and kiln-fuse/overlayfs (below 1: kiln's FUSE overlay is faster).
#
#   scripts/bench-snapshot.sh [FILES] [SIZE_MB]     (default 30000 files, 500 MB)
#
# Needs fuse-overlayfs (apt-get install fuse-overlayfs) for its row; a release kiln.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-30000}
size=${2:-500}
[ -x "$here/target/release/kiln" ] || (cd "$here" && cargo build --release --quiet -p kiln-cli)
[ -x "$here/target/release/kiln-overlay" ] || (cd "$here" && cargo build --release --quiet -p kiln-snapshotter --bin kiln-overlay)
command -v fuse-overlayfs >/dev/null || echo "note: fuse-overlayfs is not installed; its row will say skipped" >&2
"$here/target/release/kiln" bench snapshot --files "$files" --size "$size" \
  --backends fuse,kiln-overlay,overlay,fuse-overlayfs,plain,copy
