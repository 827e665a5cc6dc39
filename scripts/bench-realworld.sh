#!/usr/bin/env bash
# Builds the real-world apps of tests/realworld/ (the contexts tests/realworld_cli.rs
# builds: Python, Node, Rust) with kiln and with Debian's buildah, both as root, through
# a docker-registry on loopback, cold (empty stores; the apt, PyPI, npm and crates.io
# downloads are real), and prints the times side by side with the ratio kiln/buildah
# (below 1: kiln faster).
#
#   scripts/bench-realworld.sh [RUNS]        (as root; default 1, medians over RUNS)
#
# The Debian base (scripts/setup-host.sh's mmdebstrap tar) is built once with kiln and
# pushed; both tools pull it. Per tool and run, in empty stores: the Python app; the
# "node" image FROM the base, pushed, then the Node app FROM it (pulled) in another
# empty store, pushed; the same for "rust", then the Rust app again after a source
# change in the same store (its cargo registry comes from the cache mount). Every build
# pushes its image. buildah runs with --layers, --network host and --tls-verify=false
# (the loopback registry speaks plain HTTP); kiln with its defaults.
#
# Needs: buildah, docker-registry, python3, bc, a release kiln (cargo build --release).
set -euo pipefail
runs=${1:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "bench-realworld.sh: run as root" >&2; exit 1; }
for tool in buildah docker-registry python3 bc; do
  command -v "$tool" >/dev/null || { echo "bench-realworld.sh: needs $tool" >&2; exit 1; }
done
tar=${KILN_TEST_DEBIAN_TAR:-/var/cache/kiln-tests/debian-bookworm.tar}
[ -s "$tar" ] || { echo "bench-realworld.sh: $tar missing (scripts/setup-host.sh makes it)" >&2; exit 1; }
kiln=$here/target/release/kiln
[ -x "$kiln" ] || (cd "$here" && cargo build --release --quiet -p kiln-cli)
apps=$here/tests/realworld

work=$(mktemp -d /tmp/kiln-bench-rw.XXXXXX)
regpid=
# buildah's stores hold overlay mounts: its rmi takes them down before they are removed.
drop_buildah_stores() {
  local s
  for s in "$work"/buildah-*/*/; do
    [ -d "$s/root" ] || continue
    buildah --root "$s/root" --runroot "$s/run" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
  done
}
cleanup() {
  [ -z "$regpid" ] || kill "$regpid" 2>/dev/null || true
  drop_buildah_stores
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg
EOF
env -u REGISTRY_AUTH_FILE docker-registry serve "$work/registry.yml" >/dev/null 2>"$work/registry.log" &
regpid=$!
for _ in $(seq 200); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

base=$reg/kiln/debian:bookworm
mkdir -p "$work/base-ctx"
cp "$tar" "$work/base-ctx/debian.tar"
printf 'FROM scratch\nADD debian.tar /\nCMD ["bash"]\n' >"$work/base-ctx/Dockerfile"
KILN_ROOT=$work/kiln-base "$kiln" build -q -t "$base" --push "$work/base-ctx" >/dev/null
rm -rf "$work/base-ctx" "$work/kiln-base"

common=(--build-arg "BASE=$base" --build-context hostcerts=/etc/ssl/certs)
now() { date +%s.%N; }

# $1 store dir, $2 image, $3 context, $4.. more build args: build and push; prints the
# wall time. Either tool's log is kept and shown when it fails.
kiln_build() {
  local store=$1 ref=$2 ctx=$3 t0 t1
  shift 3
  t0=$(now)
  if ! KILN_ROOT=$store "$kiln" build --progress plain "${common[@]}" "$@" -t "$ref" --push "$ctx" >"$work/log" 2>&1; then
    cat "$work/log" >&2
    exit 1
  fi
  t1=$(now)
  echo "$t1 - $t0" | bc
}
buildah_build() {
  local store=$1 ref=$2 ctx=$3 t0 t1
  shift 3
  local b=(buildah --root "$store/root" --runroot "$store/run" --storage-driver overlay)
  t0=$(now)
  if ! { "${b[@]}" bud --layers --network host --tls-verify=false "${common[@]}" "$@" -t "$ref" "$ctx" &&
    "${b[@]}" push --tls-verify=false "$ref" "docker://$ref"; } >"$work/log" 2>&1; then
    cat "$work/log" >&2
    exit 1
  fi
  t1=$(now)
  echo "$t1 - $t0" | bc
}

# $1 name, $2 tool, $3.. its build's arguments: "name seconds".
step() {
  local name=$1 tool=$2 t
  shift 2
  t=$("${tool}_build" "$@")
  echo "$name $t"
}

# Per tool ($1: kiln or buildah) and run ($2): one line of "name seconds" per build.
pipeline() {
  local tool=$1 d=$work/$1-$2
  mkdir -p "$d"
  cp -r "$apps/rust-app" "$d/rust-app"
  step python-app "$tool" "$d/py" "$reg/kiln/pyapp:$tool" "$apps/python-app"
  step node-image "$tool" "$d/node" "$reg/kiln/node:$tool" "$apps/node-base"
  step node-app "$tool" "$d/node-app" "$reg/kiln/nodeapp:$tool" "$apps/node-app" --build-arg "NODE=$reg/kiln/node:$tool"
  step rust-image "$tool" "$d/rust" "$reg/kiln/rust:$tool" "$apps/rust-base"
  step rust-app "$tool" "$d/rust-app-store" "$reg/kiln/rustapp:$tool" "$d/rust-app" --build-arg "RUST=$reg/kiln/rust:$tool"
  sed -i 's/1_234_567_u32/7_654_321_u32/' "$d/rust-app/src/main.rs"
  step rust-rebuild "$tool" "$d/rust-app-store" "$reg/kiln/rustapp:$tool" "$d/rust-app" --build-arg "RUST=$reg/kiln/rust:$tool"
  if grep -q 'Downloaded itoa' "$work/log"; then
    echo "bench-realworld.sh: $tool's rebuild downloaded itoa again (its cache mount was not reused)" >&2
  fi
  drop_buildah_stores
  rm -rf "$d"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$work/times"
for run in $(seq "$runs"); do
  for tool in kiln buildah; do
    pipeline "$tool" "$run" >"$work/run-times"
    sed "s/^/$tool /" "$work/run-times" >>"$work/times"
  done
done

echo "kiln vs buildah, real-world builds (as root, cold, through a loopback registry; median of $runs; ratio = kiln/buildah)"
tk=0
tb=0
for name in python-app node-image node-app rust-image rust-app rust-rebuild; do
  k=$(awk -v n="$name" '$1 == "kiln" && $2 == n {print $3}' "$work/times" | median)
  b=$(awk -v n="$name" '$1 == "buildah" && $2 == n {print $3}' "$work/times" | median)
  tk=$(echo "$tk + $k" | bc)
  tb=$(echo "$tb + $b" | bc)
  printf '%-13s kiln %7.2fs  buildah %7.2fs  ratio %5.2f\n' "$name" "$k" "$b" "$(echo "$k / $b" | bc -l)"
done
printf '%-13s kiln %7.2fs  buildah %7.2fs  ratio %5.2f\n' total "$tk" "$tb" "$(echo "$tk / $tb" | bc -l)"
