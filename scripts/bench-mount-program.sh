#!/usr/bin/env bash
# buildah with overlay.mount_program = fuse-overlayfs versus kiln-overlay, in one run, on
# a file-heavy build (tens of thousands of files written and rewritten in RUN steps), from
# the same offline busybox base; prints the seconds and the ratio kiln-overlay/fuse-overlayfs
# (below 1: kiln-overlay is faster). Run as root (buildah's storage under a temp root).
#
#   scripts/bench-mount-program.sh [FILES] [RUNS]      (default 20000 files, 3 runs)
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "bench-mount-program.sh: run as root" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-20000}
runs=${2:-3}
for tool in buildah fuse-overlayfs skopeo bc; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }
done
[ -x "$here/target/release/kiln" ] || (cd "$here" && cargo build --release --quiet -p kiln-cli)
[ -x "$here/target/release/kiln-overlay" ] || (cd "$here" && cargo build --release --quiet -p kiln-snapshotter --bin kiln-overlay)
work=$(mktemp -d)
trap 'umount -R "$work"/*/graph 2>/dev/null || true; rm -rf "$work"' EXIT
ln -s "$here/target/release/kiln-overlay" "$work/kiln-overlay"
KILN="$here/target/release/kiln" bash "$here/scripts/busybox-base.sh" "$work/base" >/dev/null
mkdir -p "$work/ctx"
cat >"$work/ctx/Dockerfile" <<DOCKERFILE
FROM docker.io/library/busybox:latest
RUN mkdir -p /data && cd /data && i=0 && while [ \$i -lt $files ]; do mkdir -p d\$((i / 100)); echo "file \$i" > d\$((i / 100))/f\$i; i=\$((i + 1)); done
RUN cp -a /data /copy && chmod -R go-w /copy && find /copy -type f | wc -l
RUN cd /data && for d in d1*; do rm -rf \$d; done && find / -xdev -type f | wc -l
DOCKERFILE
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A times
for program in /usr/bin/fuse-overlayfs "$work/kiln-overlay"; do
  name=$(basename "$program")
  list=()
  for _ in $(seq "$runs"); do
    root="$work/$name-$RANDOM"
    mkdir -p "$root"
    opts=(--root "$root/graph" --runroot "$root/run" --storage-driver overlay --storage-opt "overlay.mount_program=$program")
    skopeo copy --quiet "oci:$work/base" "containers-storage:[overlay@$root/graph+$root/run:overlay.mount_program=$program]docker.io/library/busybox:latest" >/dev/null
    t0=$(date +%s.%N)
    buildah "${opts[@]}" bud -q --pull=never --isolation chroot --layers=false -t bench "$work/ctx" >/dev/null
    t1=$(date +%s.%N)
    list+=("$(echo "$t1 - $t0" | bc)")
    buildah "${opts[@]}" rmi -a -f >/dev/null 2>&1 || true
    umount -R "$root/graph" 2>/dev/null || true
    rm -rf "$root"
  done
  times[$name]=$(printf '%s\n' "${list[@]}" | median)
done
printf 'buildah bud, %s files, median of %s: fuse-overlayfs %.2fs, kiln-overlay %.2fs, ratio kiln-overlay/fuse-overlayfs %.2f\n' \
  "$files" "$runs" "${times[fuse-overlayfs]}" "${times[kiln-overlay]}" \
  "$(echo "${times[kiln-overlay]} / ${times[fuse-overlayfs]}" | bc -l)"
