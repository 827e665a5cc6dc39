#!/usr/bin/env bash
# Assembles an offline busybox base image from Debian's busybox-static, as an OCI image
# layout, with kiln itself (FROM scratch + COPY of a prepared root filesystem), so tests,
# examples and benchmarks never pull anything from the internet.
#
#   scripts/busybox-base.sh OUT_DIR        (KILN=path/to/kiln, default target/release or debug)
#
# The result is reproducible (SOURCE_DATE_EPOCH=0) and tagged busybox:latest in the layout;
# use it with  --build-context busybox=oci-layout://OUT_DIR  or  kiln load -i OUT_DIR.
set -euo pipefail
out=${1:?usage: busybox-base.sh OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
kiln=${KILN:-}
if [ -z "$kiln" ]; then
  for k in "$here/target/release/kiln" "$here/target/debug/kiln"; do
    if [ -x "$k" ]; then kiln=$k; break; fi
  done
fi
[ -n "$kiln" ] || { echo "busybox-base.sh: build kiln first (cargo build), or set KILN" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "busybox-base.sh: needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

ctx=$(mktemp -d)
root=$(mktemp -d)
trap 'rm -rf "$ctx" "$root"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/rootfs/root"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$applet"
done
chmod 1777 "$ctx/rootfs/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/rootfs/etc/group"
find "$ctx" -exec touch -h -d @0 {} +
printf 'FROM scratch\nCOPY rootfs/ /\nCMD ["sh"]\n' >"$ctx/Dockerfile"
SOURCE_DATE_EPOCH=0 KILN_ROOT="$root" "$kiln" build -q -t busybox:latest \
  -o "type=oci,dest=$out" "$ctx" >/dev/null
echo "busybox base image: $out (busybox:latest)"
