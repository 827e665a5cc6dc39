#!/usr/bin/env bash
# Builds the same multi-stage Dockerfiles with kiln and with Debian's buildah, rootless,
# from the same offline busybox base (an OCI layout), cold (empty store) and warm (same
# store again), and prints the medians and the ratio kiln/buildah (below 1: kiln faster).
# A second part measures the build cache: a no-change and a one-file-changed rebuild
# against the cold build (kiln and buildah --layers), three CPU-bound stages with the
# default -j against -j 1, and the rebuild of an unchanged 50,000-file context.
# A third part compares snapshotters, one build each, side by side: kiln --snapshotter
# fuse, kiln --snapshotter overlay, buildah with fuse-overlayfs as overlay.mount_program
# and buildah on native (kernel) overlay, on two workloads:
#   file-heavy  a context with a tar of HEAVY_FILES files, HEAVY_MB MB (10^6 bytes;
#               defaults 37000 and 290): small text files in nested directories, and 1 %
#               of the files binary, three quarters of the bytes; made offline, the same
#               bytes every time. Steps: COPY the tar; untar it; read and stat every file;
#               chmod a part, delete a part, cp -a a part (files and whole directories);
#   multi-step  package-install style, MULTI_FILES (default 20000) small files in nested
#               directories: create them; stat all and rewrite a third; append to another
#               third and delete a tenth; read all.
# It prints, per engine, the build's total time (the build command, wall clock: with the
# base image's import for kiln, not skopeo's copy into buildah's store) and per step:
#   step  kiln: the step's duration as kiln reports it (--progress rawjson), from its
#         start to its snapshot committed into a (zstd) layer; buildah (--layers, so each
#         step commits, as kiln's do): from its "STEP k/n" line to the "-->" line of its
#         commit (the last step's commit is the image's), the lines stamped as they come;
#   run   inside the RUN only, from /proc/uptime read at its start and end (10 ms
#         resolution, the same clock for both tools): the work on the mounted snapshot,
#         without mounting and committing;
# and the ratios fuse/overlay (kiln's two), fuse/buildah-fuse-overlayfs and
# kiln-overlay/buildah-overlay (below 1: the first is faster). The table goes to
# OUT_DIR/build-table.txt (default ./bench-build), with each build's log beside it, and,
# when gnuplot is installed (apt-get install gnuplot-nox), a chart per workload of the
# step times: OUT_DIR/file-heavy.png, OUT_DIR/multi-step.png, one bar per engine per step.
#
#   scripts/bench-build.sh [RUNS]        (default 3; as root it runs as $KILN_BENCH_USER, kiln-ci)
#   PARTS=snapshotters scripts/bench-build.sh      (some parts only: a comma-separated
#                                                   subset of builds,cache,snapshotters)
#   ENGINES=kiln-fuse,kiln-overlay PARTS=snapshotters scripts/bench-build.sh
#                 (a subset of kiln-fuse,kiln-overlay,buildah-fuse-overlayfs,buildah-overlay)
#   HEAVY_FILES=5000 HEAVY_MB=40 MULTI_FILES=5000 PARTS=snapshotters scripts/bench-build.sh
#
# Needs: buildah, skopeo (apt-get install buildah skopeo), a release kiln
# (cargo build --release), busybox-static; for the snapshotter part also fuse-overlayfs
# and openssl (the binary files' bytes: AES-CTR over zeros, under a fixed key). buildah
# runs with --isolation chroot and --pull=never; kiln with its defaults (snapshotter auto)
# but in the snapshotter part. In the first part kiln's warm builds come from its step
# cache while buildah runs with its default --layers=false (warm = the base image is
# already in the store); the cache part and the snapshotter part give buildah --layers.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
user=${KILN_BENCH_USER:-kiln-ci}
die() { echo "bench-build.sh: $*" >&2; exit 1; }
# A positive whole number at least $3, or a clear refusal.
count() {
  [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge "$3" ] || die "$1 must be a whole number of at least $3 (got '$2')"
  echo "$2"
}
runs=$(count RUNS "${1:-3}" 1)
parts=${PARTS:-builds,cache,snapshotters}
for p in ${parts//,/ }; do
  case $p in builds | cache | snapshotters) ;; *) die "PARTS: unknown part '$p' (valid: builds, cache, snapshotters)" ;; esac
done
[ -n "${parts//,/}" ] || die "PARTS is empty (valid: builds, cache, snapshotters)"
part() { [[ ,$parts, == *,$1,* ]]; }
all_engines=(kiln-fuse kiln-overlay buildah-fuse-overlayfs buildah-overlay)
engines=${ENGINES:-$(IFS=,; echo "${all_engines[*]}")}
for e in ${engines//,/ }; do
  [[ " ${all_engines[*]} " == *" $e "* ]] || die "ENGINES: unknown engine '$e' (valid: $(IFS=,; echo "${all_engines[*]}"))"
done
[ -n "${engines//,/}" ] || die "ENGINES is empty"
heavy_files=$(count HEAVY_FILES "${HEAVY_FILES:-37000}" 10)
heavy_mb=$(count HEAVY_MB "${HEAVY_MB:-290}" 1)
multi_files=$(count MULTI_FILES "${MULTI_FILES:-20000}" 30)
out_dir=$(realpath -m "${KILN_BENCH_OUT:-${OUT_DIR:-$PWD/bench-build}}")
needs=(buildah skopeo bc)
if part snapshotters; then needs+=(fuse-overlayfs openssl tar split); fi
for tool in "${needs[@]}"; do
  command -v "$tool" >/dev/null || die "needs $tool (apt-get install $tool)"
done
if [ -z "${KILN_BENCH_INNER:-}" ] && [ ! -x "$here/target/release/kiln" ]; then
  (cd "$here" && cargo build --release --quiet -p kiln-cli)
fi

if [ "$(id -u)" -eq 0 ] && [ -z "${KILN_BENCH_INNER:-}" ]; then
  # Rootless is what is compared: stage everything where the bench user can read it.
  stage=$(mktemp -d /tmp/kiln-bench.XXXXXX)
  trap 'rm -rf "$stage"' EXIT
  cp "$here/target/release/kiln" "$stage/kiln"
  cp "$0" "$stage/bench-build.sh"
  cp "$here/scripts/busybox-base.sh" "$here/scripts/bar-chart.sh" "$stage/"
  cp -r "$here/tests/examples" "$stage/examples"
  mkdir "$stage/out"
  chmod -R a+rwX "$stage"
  runuser -u "$user" -- env HOME="$stage" KILN_BENCH_INNER="$stage" KILN_BENCH_OUT="$stage/out" \
    PARTS="$parts" ENGINES="$engines" HEAVY_FILES="$heavy_files" HEAVY_MB="$heavy_mb" \
    MULTI_FILES="$multi_files" bash "$stage/bench-build.sh" "$runs"
  if [ -n "$(ls -A "$stage/out")" ]; then
    mkdir -p "$out_dir"
    cp -r "$stage/out/." "$out_dir/"
    echo "results (table, charts, logs): $out_dir"
  fi
  exit 0
fi

work=${KILN_BENCH_INNER:-$(mktemp -d)}
kiln=${KILN_BENCH_INNER:+$work/kiln}
kiln=${kiln:-$here/target/release/kiln}
examples=${KILN_BENCH_INNER:+$work/examples}
examples=${examples:-$here/tests/examples}
scripts=${KILN_BENCH_INNER:+$work}
scripts=${scripts:-$here/scripts}
cd "$work"
KILN="$kiln" bash "$scripts/busybox-base.sh" "$work/base" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

# ---- kiln vs buildah, cold and warm ----------------------------------------------
if part builds; then
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
fi

# ---- the build cache --------------------------------------------------------------
if part cache; then
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
fi

# ---- snapshotters side by side ----------------------------------------------------
if part snapshotters; then
# Each RUN prints /proc/uptime at its start and end (busybox's date has no %N).
mark='read t _ </proc/uptime; echo @@$t'

# The file-heavy context (HEAVY_MB: the tar's size, in 10^6 bytes): small text files in s/dNNNN/ and s/dNNNN/sub/ (100 a
# directory, a quarter of the bytes), 1 % of the files binary in bin/ (the rest of the
# bytes, AES-CTR of zeros under a fixed key: incompressible, the same every time); one
# tar with fixed order, owners and times.
gen_heavy() {
  local ctx=$1 tree=$1/tree total big small avg big_size ndirs
  big=$((heavy_files / 100))
  [ "$big" -ge 1 ] || big=1
  small=$((heavy_files - big))
  ndirs=$(((small + 99) / 100))
  # The files' bytes: the tar's size less its headers and padding (about 768 bytes a
  # file, 512 a directory).
  total=$((heavy_mb * 1000000 - heavy_files * 768 - ndirs * 1024))
  [ "$total" -gt 0 ] || die "HEAVY_MB=$heavy_mb is too small for HEAVY_FILES=$heavy_files"
  avg=$((total / 4 / small))
  [ "$avg" -ge 16 ] || avg=16
  big_size=$(((total - small * avg) / big))
  [ "$big_size" -ge 1 ] || die "HEAVY_MB=$heavy_mb is too small for HEAVY_FILES=$heavy_files"
  mkdir -p "$tree/bin"
  seq -f "$tree/s/d%04g/sub" 0 $((ndirs - 1)) | xargs mkdir -p
  awk -v n="$small" -v avg="$avg" -v root="$tree/s" 'BEGIN {
    while (length(text) < 2 * avg + 100) text = text sprintf("line %d: the quick brown fox jumps over the lazy dog\n", length(text))
    for (i = 0; i < n; i++) {
      d = sprintf("%s/d%04d", root, int(i / 100))
      f = (i % 100 < 50) ? sprintf("%s/f%d.txt", d, i) : sprintf("%s/sub/f%d.txt", d, i)
      printf "file %d\n%s", i, substr(text, 1 + i % 61, int(avg / 2) + (i * 7919) % (avg + 1)) >f
      close(f)
    }
  }'
  { openssl enc -aes-128-ctr -nosalt -K 6b696c6e2d62656e63682d6275696c64 -iv 00000000000000000000000000000000 \
    -in /dev/zero 2>/dev/null || true; } | head -c $((big * big_size)) | split -a 5 -d -b "$big_size" - "$tree/bin/b"
  tar -C "$tree" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$ctx/tree.tar" .
  rm -rf "$tree"
  heavy_desc="$heavy_files files ($small text, $big binary), tar $(awk -v b="$(stat -c %s "$ctx/tree.tar")" 'BEGIN { printf "%.1f", b / 1000000 }') MB"
}
mkdir -p "$work/heavy" "$work/multi"
gen_heavy "$work/heavy"
{
  echo 'FROM busybox'
  echo 'COPY tree.tar /tree.tar'
  echo 'RUN set -e; @MARK@; mkdir /x; tar -C /x -xf /tree.tar; @MARK@'
  echo 'RUN set -e; @MARK@; find /x -type f -exec cat {} + >/dev/null; find /x -exec stat {} + >/dev/null; @MARK@'
  echo "RUN set -e; @MARK@; find /x/s -maxdepth 1 -name 'd*[012]' -exec chmod -R go-w {} +; find /x/bin -name 'b*[012]' -exec chmod 600 {} +;" \
    "find /x/s -maxdepth 1 -name 'd*[345]' -exec rm -rf {} +; find /x/bin -name 'b*[34]' -exec rm -f {} +;" \
    "mkdir /copy; find /x/s -maxdepth 1 -name 'd*[67]' -exec cp -a {} /copy/ \\; ; find /x/bin -name 'b*[56]' -exec cp -a {} /copy/ \\; ; @MARK@"
} | sed "s|@MARK@|$mark|g" >"$work/heavy/Dockerfile"
# Package-install style: file i is /pkg/lib<i/200>/sub<i/20 % 10>/f<i>.
cat <<'DOCKERFILE' | sed -e "s|@MARK@|$mark|g" -e "s|@N@|$multi_files|g" >"$work/multi/Dockerfile"
FROM busybox
RUN set -e; @MARK@; i=0; while [ $i -lt @N@ ]; do d=/pkg/lib$((i / 200))/sub$((i / 20 % 10)); if [ $((i % 20)) -eq 0 ]; then mkdir -p $d; fi; echo "package file $i: installed content, a line or two" >$d/f$i; i=$((i + 1)); done; @MARK@
RUN set -e; @MARK@; find /pkg -exec stat {} + >/dev/null; i=0; while [ $i -lt @N@ ]; do echo "package file $i, rewritten" >/pkg/lib$((i / 200))/sub$((i / 20 % 10))/f$i; i=$((i + 3)); done; @MARK@
RUN set -e; @MARK@; i=1; while [ $i -lt @N@ ]; do echo "appended to $i" >>/pkg/lib$((i / 200))/sub$((i / 20 % 10))/f$i; i=$((i + 3)); done; rm -rf /pkg/lib*/sub9; @MARK@
RUN set -e; @MARK@; find /pkg -type f -exec cat {} + | wc -c; ls -lR /pkg >/dev/null; @MARK@
DOCKERFILE
multi_desc="$multi_files small files"
heavy_steps="copy untar read-stat chmod-rm-cp"
multi_steps="create stat-rewrite append-rm read-all"

# The build's output with each line stamped by /proc/uptime as it arrives.
stamp() {
  local line u _
  while IFS= read -r line; do
    read -r u _ </proc/uptime
    printf '%s %s\n' "$u" "$line"
  done
}
# Builds $2 with engine $1 in a fresh store, its output in $3; sets total (seconds).
build_engine() {
  local engine=$1 ctx=$2 log=$3 r t0 t1 ok=1
  r=$(mktemp -d "$work/snap.XXXX")
  case $engine in
    kiln-*)
      t0=$(now)
      KILN_ROOT=$r/kiln "$kiln" build --progress rawjson --snapshotter "${engine#kiln-}" \
        --build-context busybox=oci-layout://"$work/base" -t bench "$ctx" >"$log" 2>&1 || ok=0
      t1=$(now)
      ;;
    buildah-*)
      local opts=(--root "$r/root" --runroot "$r/run" --storage-driver overlay) spec="overlay@$r/root+$r/run"
      if [ "$engine" = buildah-fuse-overlayfs ]; then
        opts+=(--storage-opt "overlay.mount_program=$(command -v fuse-overlayfs)")
        spec+=":overlay.mount_program=$(command -v fuse-overlayfs)"
      fi
      skopeo copy --quiet "oci:$work/base" "containers-storage:[$spec]docker.io/library/busybox:latest" >/dev/null
      t0=$(now)
      buildah "${opts[@]}" build --layers --pull=never --isolation chroot -t bench "$ctx" 2>&1 | stamp >"$log" || ok=0
      t1=$(now)
      buildah "${opts[@]}" rmi -a -f >/dev/null 2>&1 || true
      ;;
  esac
  buildah unshare rm -rf "$r" 2>/dev/null || rm -rf "$r" 2>/dev/null || true
  if [ "$ok" = 0 ]; then
    tail -n 20 "$log" >&2
    die "$engine: the build of $ctx failed (its log's end above; all of it: $log)"
  fi
  total=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}
# The steps' seconds (one a line, in order) from engine $1's log $2.
step_times() {
  case $1 in
    kiln-*) grep -o '"type":"step_done","id":[0-9]*,"seconds":[0-9.eE+-]*' "$2" | sed 's/.*"seconds"://' ;;
    buildah-*) awk '$2 == "STEP" { s = $1; open = 1 } $2 == "-->" && open { print $1 - s; open = 0 }' "$2" ;;
  esac | awk '{ printf "%.2f\n", $1 }'
}
# The RUNs' inner seconds from the /proc/uptime marks in log $1.
run_times() { grep -o '@@[0-9][0-9.]*' "$1" | tr -d @ | awk 'NR % 2 == 1 { s = $1 } NR % 2 == 0 { printf "%.2f\n", $1 - s }'; }

# $1 workload, $2 context, $3 its step names: one build per engine; rows in
# $out_dir/$1.steps (engine total step…), $out_dir/$1.runs (engine run…) and
# $out_dir/$1.load (engine, the load average before its build: the machine may be shared).
bench_workload() {
  local wl=$1 ctx=$2 names=$3 engine log st rt nsteps nruns
  nsteps=$(wc -w <<<"$names")
  nruns=$(grep -c '^RUN' "$ctx/Dockerfile")
  : >"$out_dir/$wl.steps"
  : >"$out_dir/$wl.runs"
  : >"$out_dir/$wl.load"
  for engine in ${engines//,/ }; do
    log=$out_dir/$wl.$engine.log
    echo "$wl: $engine …" >&2
    echo "$engine $(cut -d' ' -f1 /proc/loadavg)" >>"$out_dir/$wl.load"
    build_engine "$engine" "$ctx" "$log"
    st=$(step_times "$engine" "$log" | xargs)
    rt=$(run_times "$log" | xargs)
    [ "$(wc -w <<<"$st")" -eq "$nsteps" ] || die "$engine: $(wc -w <<<"$st") step times in $log, not $nsteps"
    [ "$(wc -w <<<"$rt")" -eq "$nruns" ] || die "$engine: $(wc -w <<<"$rt") RUN times in $log, not $nruns"
    echo "$engine $total $st" >>"$out_dir/$wl.steps"
    echo "$engine $rt" >>"$out_dir/$wl.runs"
    echo "$wl: $engine $total s" >&2
  done
}
# Prints rows file $1 under header $2, then the ratio rows of the engines it has.
rows() {
  awk -v header="$2" '
    function ratio(label, a, b, i, x, y) {
      if (!(a in row) || !(b in row)) return
      printf "%-28s", label
      for (i = 2; i <= nf; i++) {
        x = v[a, i]; y = v[b, i]
        printf " %12s", (x == "-" || y == "-" || y + 0 == 0) ? "-" : sprintf("%.2f", x / y)
      }
      print ""
    }
    { name[NR] = $1; row[$1] = 1; nf = NF; for (i = 2; i <= NF; i++) v[$1, i] = $i }
    END {
      n = split(header, h, " ")
      printf "%-28s", h[1]; for (i = 2; i <= n; i++) printf " %12s", h[i]; print ""
      for (r = 1; r <= NR; r++) { printf "%-28s", name[r]; for (i = 2; i <= nf; i++) printf " %12s", v[name[r], i]; print "" }
      ratio("fuse/overlay", "kiln-fuse", "kiln-overlay")
      ratio("fuse/buildah-fuse-overlayfs", "kiln-fuse", "buildah-fuse-overlayfs")
      ratio("kiln-overlay/buildah-overlay", "kiln-overlay", "buildah-overlay")
    }' "$1"
}
# $1 workload, $2 its description, $3 its step names, $4 its RUN steps' names.
report() {
  echo "== $1: $2 (one build per engine, seconds; ratios below 1: the first is faster)"
  echo "-- the build and its steps (kiln: start to layer committed; buildah --layers: STEP line to its commit)"
  rows "$out_dir/$1.steps" "engine total $3"
  echo "-- inside each RUN (/proc/uptime at its start and end)"
  rows "$out_dir/$1.runs" "engine $4"
  echo "-- the load average (1 min) before each build: $(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }' "$out_dir/$1.load")"
  echo
}

mkdir -p "$out_dir"
bench_workload file-heavy "$work/heavy" "$heavy_steps"
bench_workload multi-step "$work/multi" "$multi_steps"
{
  echo "snapshotters (rootless, as $(id -un), $(nproc) CPUs, kernel $(uname -r); kiln --snapshotter fuse|overlay, buildah $(buildah --version | awk '{ print $3 }') --layers with fuse-overlayfs or native overlay)"
  echo
  report file-heavy "$heavy_desc" "$heavy_steps" "${heavy_steps#copy }"
  report multi-step "$multi_desc" "$multi_steps" "$multi_steps"
} | tee "$out_dir/build-table.txt"

if command -v gnuplot >/dev/null; then
  . "$scripts/bar-chart.sh"
  for wl in file-heavy:"$heavy_desc":"$heavy_steps" multi-step:"$multi_desc":"$multi_steps"; do
    IFS=: read -r name desc names <<<"$wl"
    awk -v names="$names" '
      { e[NR] = $1; for (i = 3; i <= NF; i++) v[NR, i - 2] = $i }
      END {
        n = split(names, s, " ")
        printf "step"; for (r = 1; r <= NR; r++) printf " %s", e[r]; print ""
        for (j = 1; j <= n; j++) { printf "%s", s[j]; for (r = 1; r <= NR; r++) printf " %s", v[r, j]; print "" }
      }' "$out_dir/$name.steps" >"$out_dir/$name.dat"
    bar_chart "$out_dir/$name.png" "$name, $desc: seconds per step (lower is better)" "$out_dir/$name.dat"
  done
  echo "chart: $out_dir/{file-heavy,multi-step}.png"
else
  echo "note: gnuplot is not installed; no chart (apt-get install gnuplot-nox)" >&2
fi
fi
