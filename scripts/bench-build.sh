#!/usr/bin/env bash
# Builds the same multi-stage Dockerfiles with kiln and with Debian's buildah, rootless,
# from the same offline busybox base (an OCI layout), cold (empty store) and warm (same
# store again), and prints the medians and the ratio kiln/buildah (below 1: kiln faster).
#
#   scripts/bench-build.sh [RUNS]        (default 3; as root it runs as $KILN_BENCH_USER, kiln-ci)
#
# Needs: buildah, skopeo (apt-get install buildah skopeo), a release kiln
# (cargo build --release), busybox-static. buildah runs with --isolation chroot and
# --pull=never; kiln with its defaults (snapshotter auto). kiln has no step cache yet, so
# its warm builds redo every step; buildah build runs with its default --layers=false, so
# neither reuses steps (warm = the base image is already in the store).
set -euo pipefail
runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
user=${KILN_BENCH_USER:-kiln-ci}
for tool in buildah skopeo; do
  command -v "$tool" >/dev/null || { echo "bench-build.sh: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
if [ -z "${KILN_BENCH_INNER:-}" ] && [ ! -x "$here/target/release/kiln" ]; then
  (cd "$here" && cargo build --release --quiet -p kiln-cli)
fi

if [ "$(id -u)" -eq 0 ] && [ -z "${KILN_BENCH_INNER:-}" ]; then
  # Rootless is what is compared: stage everything where the bench user can read it.
  stage=$(mktemp -d /tmp/kiln-bench.XXXXXX)
  cp "$here/target/release/kiln" "$stage/kiln"
  cp "$0" "$stage/bench-build.sh"
  cp "$here/scripts/busybox-base.sh" "$stage/"
  cp -r "$here/tests/examples" "$stage/examples"
  chmod -R a+rwX "$stage"
  runuser -u "$user" -- env HOME="$stage" KILN_BENCH_INNER="$stage" bash "$stage/bench-build.sh" "$runs"
  rm -rf "$stage"
  exit 0
fi

work=${KILN_BENCH_INNER:-$(mktemp -d)}
kiln=${KILN_BENCH_INNER:+$work/kiln}
kiln=${kiln:-$here/target/release/kiln}
examples=${KILN_BENCH_INNER:+$work/examples}
examples=${examples:-$here/tests/examples}
base_script=${KILN_BENCH_INNER:+$work/busybox-base.sh}
base_script=${base_script:-$here/scripts/busybox-base.sh}
cd "$work"
KILN="$kiln" bash "$base_script" "$work/base" >/dev/null

# A project with many files: two builders generate and transform 3,000 files each in
# parallel, a packer tars one of them, the final image takes the results.
mkdir -p "$work/files"
cat >"$work/files/Dockerfile" <<'DOCKERFILE'
FROM busybox AS gen-a
RUN mkdir -p /out/a && for i in $(seq 3000); do echo "file $i of a" > /out/a/f$i.txt; done
FROM busybox AS gen-b
RUN mkdir -p /out/b && for i in $(seq 3000); do echo "file $i of b" | sed 's/b/B/' > /out/b/f$i.txt; done
FROM gen-a AS pack
RUN tar -C /out -czf /a.tgz a && rm -rf /out/a/f1*.txt
FROM busybox
COPY --from=gen-a /out/a /data/a
COPY --from=gen-b /out/b /data/b
COPY --from=pack /a.tgz /data/
CMD ["ls", "/data"]
DOCKERFILE

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

# $1 name, $2 context dir, $3.. extra kiln args
bench_one() {
  local name=$1 ctx=$2; shift 2
  local kc=() kw=() bc=() bw=()
  for _ in $(seq "$runs"); do
    local kr br t0 t1
    kr=$(mktemp -d "$work/kroot.XXXX")
    br=$(mktemp -d "$work/broot.XXXX")
    for pass in cold warm; do
      t0=$(now)
      KILN_ROOT=$kr "$kiln" build -q --build-context busybox=oci-layout://"$work/base" "$@" -t bench "$ctx" >/dev/null
      t1=$(now)
      if [ $pass = cold ]; then kc+=("$(echo "$t1 - $t0" | bc)"); else kw+=("$(echo "$t1 - $t0" | bc)"); fi
    done
    skopeo copy --quiet "oci:$work/base" "containers-storage:[overlay@$br/root+$br/run]docker.io/library/busybox:latest" >/dev/null
    for pass in cold warm; do
      t0=$(now)
      buildah --root "$br/root" --runroot "$br/run" --storage-driver overlay build -q \
        --pull=never --isolation chroot "$@" -t bench "$ctx" >/dev/null 2>&1
      t1=$(now)
      if [ $pass = cold ]; then bc+=("$(echo "$t1 - $t0" | bc)"); else bw+=("$(echo "$t1 - $t0" | bc)"); fi
    done
    buildah --root "$br/root" --runroot "$br/run" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
    buildah unshare rm -rf "$br" "$kr" 2>/dev/null || rm -rf "$br" "$kr" 2>/dev/null || true
  done
  local mkc mkw mbc mbw
  mkc=$(printf '%s\n' "${kc[@]}" | median)
  mkw=$(printf '%s\n' "${kw[@]}" | median)
  mbc=$(printf '%s\n' "${bc[@]}" | median)
  mbw=$(printf '%s\n' "${bw[@]}" | median)
  printf '%-12s cold: kiln %6.2fs buildah %6.2fs ratio %5.2f | warm: kiln %6.2fs buildah %6.2fs ratio %5.2f\n' \
    "$name" "$mkc" "$mbc" "$(echo "$mkc / $mbc" | bc -l)" "$mkw" "$mbw" "$(echo "$mkw / $mbw" | bc -l)"
}

echo "kiln vs buildah (rootless, as $(id -un), median of $runs; ratio = kiln/buildah)"
bench_one files "$work/files"
bench_one ci-report "$examples/ci-report" --target test
bench_one secrets "$examples/secrets" --secret id=api_token,src="$examples/secrets/Dockerfile"
