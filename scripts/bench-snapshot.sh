#!/usr/bin/env bash
# The snapshot workload, side by side in one run: kiln's FUSE overlay, kernel overlayfs
# in a user namespace, kiln's copy backend, Debian's fuse-overlayfs, and a plain
# directory. Phases: extract a tree into an empty mount, then on a fresh mount over it:
# stat every file, read every file, copy a tenth and chmod it, modify 1 % and delete 1 %,
# commit into a zstd layer; then a stack of LAYERS lowers (default 200: long Dockerfiles,
# deep base images) mounted, every name looked up through it ("depth"). Prints seconds
# per phase and the ratios kiln-fuse/fuse-overlayfs
# and kiln-fuse/overlayfs (below 1: kiln's FUSE overlay is faster), then each phase's
# peak RSS of the side serving the mount (kiln's FUSE overlay: the bench process; a mount
# program: its daemon; "-": the kernel serves it).
#
#   scripts/bench-snapshot.sh [FILES] [SIZE_MB] [OUT_DIR]   (default 30000 files, 500 MB,
#                                                            ./bench-snapshot)
#   BACKENDS=fuse,overlay,fuse-overlayfs scripts/bench-snapshot.sh   (a subset)
#
# The table is written to OUT_DIR/table.txt and, when gnuplot is installed
# (apt-get install gnuplot-nox), charted beside it: OUT_DIR/<phase>.png, one bar per
# backend, seconds (lower is better).
#
# Needs fuse-overlayfs (apt-get install fuse-overlayfs) for its row; a release kiln.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-30000}
size=${2:-500}
out=${3:-$PWD/bench-snapshot}
backends=${BACKENDS:-fuse,kiln-overlay,overlay,fuse-overlayfs,plain,copy}
[ -x "$here/target/release/kiln" ] || (cd "$here" && cargo build --release --quiet -p kiln-cli)
[ -x "$here/target/release/kiln-overlay" ] || (cd "$here" && cargo build --release --quiet -p kiln-snapshotter --bin kiln-overlay)
command -v fuse-overlayfs >/dev/null || echo "note: fuse-overlayfs is not installed; its row will say skipped" >&2
mkdir -p "$out"
"$here/target/release/kiln" bench snapshot --files "$files" --size "$size" \
  --layers "${LAYERS:-200}" --backends "$backends" | tee "$out/table.txt"

# The chart: one PNG per phase from the table's backend rows (not the ratio rows, not
# skipped backends, not the peak RSS rows below them; "-" is a phase that does not apply).
if ! command -v gnuplot >/dev/null; then
  echo "note: gnuplot is not installed; no chart (apt-get install gnuplot-nox)" >&2
  exit 0
fi
awk '/^peak RSS/ { exit } NR > 2 && $1 !~ /\// && $2 != "skipped:" && NF == 8' "$out/table.txt" >"$out/table.dat"
phases=$(sed -n 2p "$out/table.txt" | awk '{ for (i = 2; i <= NF; i++) print $i }')
. "$here/scripts/bar-chart.sh"
col=2
for phase in $phases; do
  { echo "backend $phase"; awk -v c=$col '{ print $1, $c }' "$out/table.dat"; } >"$out/$phase.dat"
  bar_chart "$out/$phase.png" "$phase: $files files, $size MB (seconds, lower is better)" "$out/$phase.dat"
  rm "$out/$phase.dat"
  col=$((col + 1))
done
echo "chart: $out/{$(echo $phases | tr ' ' ',')}.png"
