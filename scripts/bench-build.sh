#!/usr/bin/env bash
# Builds the same multi-stage Dockerfiles with kiln and with Debian's buildah, rootless,
# from the same offline busybox base (an OCI layout), cold (empty store) and warm (same
# store again), and prints the medians and the ratio kiln/buildah (below 1: kiln faster).
# A second part measures the build cache: a no-change and a one-file-changed rebuild
# against the cold build (kiln and buildah --layers), three CPU-bound stages with the
# default -j against -j 1, and the rebuild of an unchanged 50,000-file context.
#
#   scripts/bench-build.sh [RUNS]        (default 3; as root it runs as $KILN_BENCH_USER, kiln-ci)
#
# Needs: buildah, skopeo (apt-get install buildah skopeo), a release kiln
# (cargo build --release), busybox-static. buildah runs with --isolation chroot and
# --pull=never; kiln with its defaults (snapshotter auto). In the first part kiln's warm
# builds come from its step cache while buildah runs with its default --layers=false
# (warm = the base image is already in the store); the cache part gives buildah --layers.
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

# ---- the build cache --------------------------------------------------------------
# A project in the shape the Dockerfile guides advise: dependencies first, sources last.
mkdir -p "$work/layered/src"
cat >"$work/layered/Dockerfile" <<'DOCKERFILE'
FROM busybox AS deps
WORKDIR /app
COPY package.json ./
RUN head -c 300000000 /dev/zero | sha256sum > deps.sum && cat package.json > installed
COPY src/ ./src/
RUN for i in $(seq 150000); do :; done; ls src > built
FROM busybox
COPY --from=deps /app /app
DOCKERFILE
echo '{"name":"layered"}' >"$work/layered/package.json"
for i in $(seq 20); do echo "source $i" >"$work/layered/src/f$i.js"; done

# Three independent CPU-bound stages, one shell process each (different commands:
# identical ones would share one cache entry, and a sequential build would run only the
# first).
mkdir -p "$work/cpu"
{
  for s in one two three; do
    echo "FROM busybox AS $s"
    echo "RUN i=0; while [ \$i -lt 1500000 ]; do i=\$((i+1)); done; echo $s \$i > /sum"
  done
  echo "FROM busybox"
  for s in one two three; do echo "COPY --from=$s /sum /$s"; done
} >"$work/cpu/Dockerfile"

# An unchanged 50,000-file context.
mkdir -p "$work/big/ctx"
for d in $(seq 50); do
  mkdir -p "$work/big/ctx/d$d"
  for f in $(seq 1000); do echo "$d/$f"; done | while read -r n; do : >"$work/big/ctx/d${n%/*}/f${n#*/}"; done
done
printf 'FROM busybox\nCOPY ctx/ /ctx/\n' >"$work/big/Dockerfile"

timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t1 - $t0" | bc; }
kbuild() { KILN_ROOT=$1 "$kiln" build -q --build-context busybox=oci-layout://"$work/base" "${@:2}"; }
bbuild() {
  buildah --root "$1/root" --runroot "$1/run" --storage-driver overlay build -q --layers \
    --pull=never --isolation chroot "${@:2}"
}

kr=$(mktemp -d "$work/kroot.XXXX")
br=$(mktemp -d "$work/broot.XXXX")
skopeo copy --quiet "oci:$work/base" "containers-storage:[overlay@$br/root+$br/run]docker.io/library/busybox:latest" >/dev/null
kcold=$(timed kbuild "$kr" -t layered "$work/layered")
kwarm=$(timed kbuild "$kr" -t layered "$work/layered")
bcold=$(timed bbuild "$br" -t layered "$work/layered")
bwarm=$(timed bbuild "$br" -t layered "$work/layered")
echo "source 1, changed" >"$work/layered/src/f1.js"
reran=$(KILN_ROOT=$kr "$kiln" build --build-context busybox=oci-layout://"$work/base" -t layered "$work/layered" 2>&1 |
  grep -cE '^#[0-9]+ DONE' || true)
echo "source 1, changed again" >"$work/layered/src/f1.js"
kchanged=$(timed kbuild "$kr" -t layered "$work/layered")
echo "source 1, changed once more" >"$work/layered/src/f1.js"
bchanged=$(timed bbuild "$br" -t layered "$work/layered")
echo
echo "build cache (one run; kiln vs buildah --layers)"
printf 'no change     kiln %6.2fs of cold %6.2fs = %5.3f | buildah %6.2fs of cold %6.2fs = %5.3f | warm kiln/buildah %5.3f\n' \
  "$kwarm" "$kcold" "$(echo "$kwarm / $kcold" | bc -l)" "$bwarm" "$bcold" "$(echo "$bwarm / $bcold" | bc -l)" "$(echo "$kwarm / $bwarm" | bc -l)"
printf 'one file      kiln %6.2fs of cold %6.2fs = %5.3f (steps run: %s of 6) | buildah %6.2fs = %5.3f of cold | kiln/buildah %5.3f\n' \
  "$kchanged" "$kcold" "$(echo "$kchanged / $kcold" | bc -l)" "$reran" "$bchanged" "$(echo "$bchanged / $bcold" | bc -l)" "$(echo "$kchanged / $bchanged" | bc -l)"
j1=$(timed kbuild "$(mktemp -d "$work/kroot.XXXX")" -j 1 "$work/cpu")
jd=$(timed kbuild "$(mktemp -d "$work/kroot.XXXX")" "$work/cpu")
printf 'cpu stages    default -j %6.2fs vs -j 1 %6.2fs = %5.3f (%s CPUs)\n' "$jd" "$j1" "$(echo "$jd / $j1" | bc -l)" "$(nproc)"
bigroot=$(mktemp -d "$work/kroot.XXXX")
bigcold=$(timed kbuild "$bigroot" "$work/big")
bigwarm=$(timed kbuild "$bigroot" "$work/big")
printf '50k context   cold %6.2fs, unchanged rebuild %6.2fs\n' "$bigcold" "$bigwarm"
buildah --root "$br/root" --runroot "$br/run" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
buildah unshare rm -rf "$br" 2>/dev/null || rm -rf "$br" 2>/dev/null || true
