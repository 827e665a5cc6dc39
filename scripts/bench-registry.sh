#!/usr/bin/env bash
# Pull and push of a multi-layer image (4 layers of 56 MiB that do not compress: 224 MiB)
# against a real docker-registry on loopback: kiln push / kiln pull against skopeo copy of
# the same image (from and to kiln's store, itself an OCI layout), one run each, and the
# ratios kiln/skopeo (below 1: kiln faster); then the cold build of the same Dockerfile on
# an empty root without and with --cache-from the registry (the cache the first build
# exported with --cache-to).
#
#   scripts/bench-registry.sh            (as root it runs as $KILN_BENCH_USER, kiln-ci)
#
# Needs: docker-registry, skopeo, busybox-static, a release kiln (cargo build --release).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
user=${KILN_BENCH_USER:-kiln-ci}
for tool in docker-registry skopeo; do
  command -v "$tool" >/dev/null || { echo "bench-registry.sh: needs $tool" >&2; exit 1; }
done
if [ -z "${KILN_BENCH_INNER:-}" ] && [ ! -x "$here/target/release/kiln" ]; then
  (cd "$here" && cargo build --release --quiet -p kiln-cli)
fi
if [ "$(id -u)" -eq 0 ] && [ -z "${KILN_BENCH_INNER:-}" ]; then
  stage=$(mktemp -d /tmp/kiln-bench.XXXXXX)
  cp "$here/target/release/kiln" "$stage/kiln"
  cp "$0" "$stage/bench-registry.sh"
  chmod -R a+rwX "$stage"
  runuser -u "$user" -- env HOME="$stage" KILN_BENCH_INNER="$stage" bash "$stage/bench-registry.sh"
  rm -rf "$stage"
  exit 0
fi
work=${KILN_BENCH_INNER:-$(mktemp -d)}
kiln=${KILN_BIN:-$work/kiln}
[ -x "$kiln" ] || kiln=$here/target/release/kiln
cd "$work"
echo '{}' >auth.json
# skopeo's own credentials file (not exported: docker-registry reads REGISTRY_* as config).
skopeo() { REGISTRY_AUTH_FILE=$work/auth.json command skopeo "$@"; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat >registry.yml <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg
EOF
env -u REGISTRY_AUTH_FILE docker-registry serve registry.yml >registry.log 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "bench-registry.sh: docker-registry did not start:" >&2; cat registry.log >&2; exit 1; }

mkdir -p ctx/rootfs/bin
cp /bin/busybox ctx/rootfs/bin/busybox
for a in sh head echo; do ln -sf busybox ctx/rootfs/bin/$a; done
cat >ctx/Dockerfile <<'EOF'
FROM scratch
COPY rootfs/ /
RUN head -c 58720256 /dev/urandom > /l1
RUN head -c 58720256 /dev/urandom > /l2
RUN head -c 58720256 /dev/urandom > /l3
RUN head -c 58720256 /dev/urandom > /l4
EOF
"$kiln" build --root "$work/src" -q -t bench/big:1 ctx >/dev/null || { echo "bench-registry.sh: the image build failed" >&2; exit 1; }

secs() {
  local s e
  s=$(date +%s.%N)
  "$@" >"$work/last.log" 2>&1 || { echo "bench-registry.sh: $* failed:" >&2; cat "$work/last.log" >&2; exit 1; }
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
ratio() { echo "scale=2; $1 / $2" | bc; }

push_kiln=$(secs "$kiln" push --root "$work/src" bench/big:1 "$reg/bench/kiln:1")
push_skopeo=$(secs skopeo copy --dest-tls-verify=false "oci:$work/src:bench/big:1" "docker://$reg/bench/skopeo:1")
pull_kiln=$(secs "$kiln" pull --root "$work/pulled-kiln" "$reg/bench/skopeo:1")
mkdir -p "$work/pulled-skopeo"
pull_skopeo=$(secs skopeo copy --src-tls-verify=false "docker://$reg/bench/kiln:1" "oci:$work/pulled-skopeo:big")

# The cache part: steps that compute for a while and write little (a compile, a test run).
mkdir -p ctx2
cp -a ctx/rootfs ctx2/
cat >ctx2/Dockerfile <<'EOF'
FROM scratch
COPY rootfs/ /
RUN i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done; echo $i > /one
RUN i=0; while [ $i -lt 2000000 ]; do i=$((i+2)); done; echo $i > /two
RUN head -c 16777216 /dev/urandom > /data
RUN i=0; while [ $i -lt 2000000 ]; do i=$((i+4)); done; echo $i > /three
EOF
"$kiln" build --root "$work/cache-src" -q --cache-to "type=registry,ref=$reg/bench/cache:1,mode=max" ctx2 >/dev/null
cold=$(secs "$kiln" build --root "$work/cold" -q ctx2)
cached=$(secs "$kiln" build --root "$work/cached" -q --cache-from "type=registry,ref=$reg/bench/cache:1" ctx2)

# Lazy layers: a builder stage with a 64 MiB toolchain layer behind a cached COPY --from;
# the cold build with --cache-from downloads only the final image's layers.
mkdir -p ctx3
cp -a ctx/rootfs ctx3/
cat >ctx3/Dockerfile <<'EOF'
FROM scratch AS builder
COPY rootfs/ /
RUN head -c 67108864 /dev/urandom > /toolchain && echo built > /artifact
FROM scratch
COPY --from=builder /artifact /artifact
EOF
"$kiln" build --root "$work/lazy-src" -q --cache-to "type=registry,ref=$reg/bench/lazy:1,mode=max" ctx3 >/dev/null
lazy=$(secs "$kiln" build --root "$work/lazy" -q --cache-from "type=registry,ref=$reg/bench/lazy:1" ctx3)
lazy_cold=$(secs "$kiln" build --root "$work/lazy-cold" -q ctx3)
in_cache=$(du -sb "$work/lazy-src/blobs" | cut -f1)
fetched=$(du -sb "$work/lazy/blobs" | cut -f1)

printf '%-8s %10s %10s %8s\n' phase kiln skopeo ratio
printf '%-8s %9.2fs %9.2fs %8s\n' push "$push_kiln" "$push_skopeo" "$(ratio "$push_kiln" "$push_skopeo")"
printf '%-8s %9.2fs %9.2fs %8s\n' pull "$pull_kiln" "$pull_skopeo" "$(ratio "$pull_kiln" "$pull_skopeo")"
printf '\ncold build on an empty root: %.2fs; with --cache-from the registry: %.2fs (ratio %s)\n' \
  "$cold" "$cached" "$(ratio "$cached" "$cold")"
printf 'builder stage behind a cached COPY --from: cold %.2fs, with --cache-from %.2fs (ratio %s); %s of the %s bytes the cache root holds were downloaded\n' \
  "$lazy_cold" "$lazy" "$(ratio "$lazy" "$lazy_cold")" "$fetched" "$in_cache"
