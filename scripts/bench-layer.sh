#!/usr/bin/env bash
# Layer export and apply, kiln side by side with the usual tools, on the same tree in one
# run (warm page cache for everyone; the median of RUNS runs each):
#   export: kiln debug layer export (diff → sha256 → zstd -3 multi-threaded → sha256 → blob)
#       vs  tar -c | tee >(sha256sum) | zstd -T0 -3 | tee blob | sha256sum
#   apply:  kiln debug layer apply   vs  zstd -dc | tar -x   (and umoci unpack, if installed)
# Prints seconds and the ratio kiln / peer (below 1.0: kiln is faster).
# Knobs: FILES (30000), MB (500), RUNS (3), WORK (a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-30000}
MB=${MB:-500}
RUNS=${RUNS:-3}
for t in zstd tar sha256sum python3; do
  command -v "$t" >/dev/null || { echo "bench-layer: needs $t (apt-get install zstd)"; exit 2; }
done
cargo build --release --quiet -p kiln-cli
KILN=$(pwd)/target/release/kiln
WORK=${WORK:-$(mktemp -d /var/tmp/kiln-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/tree

echo "== making a tree of $FILES files, $MB MB in $TREE"
python3 - "$TREE" "$FILES" "$MB" <<'PY'
import os, sys, random
root, files, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(42)
total = mb * 1024 * 1024
sizes = [random.paretovariate(1.2) for _ in range(files)]
scale = total / sum(sizes)
words = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n"
for i, s in enumerate(sizes):
    d = os.path.join(root, f"d{i % 97:02d}", f"s{i % 13}")
    os.makedirs(d, exist_ok=True)
    n = max(1, int(s * scale))
    half = n // 2
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(random.randbytes(half))           # incompressible half
        f.write((words * (n // len(words) + 1))[: n - half])  # text half
PY
du -sh "$TREE" | sed 's/^/   /'

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() { # runs "$@" RUNS times after `prep_$1` (untimed, then sync); prints the median seconds
  for _ in $(seq "$RUNS"); do
    if declare -F "prep_$1" >/dev/null; then "prep_$1"; fi
    sync
    local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N)
    echo "$e - $s" | bc -l
  done | median
}
ratio() { echo "scale=2; $1 / $2" | bc -l; }

prep_kiln_export() { rm -rf "$WORK/kb"; }
kiln_export() { "$KILN" debug layer export "$TREE" "$WORK/kb"; }
prep_shell_export() { rm -rf "$WORK/sb"; mkdir -p "$WORK/sb"; }
shell_export() {
  tar -C "$TREE" --sort=name -cf - . | tee >(sha256sum >"$WORK/sb/diffid") | zstd -q -T0 -3 -c | tee "$WORK/sb/blob" | sha256sum >"$WORK/sb/digest"
}
echo "== export"
k=$(timeit kiln_export); s=$(timeit shell_export)
printf '   kiln export            %6.2fs\n   tar|zstd -T0|sha256sum %6.2fs\n   ratio kiln/shell       %s\n' "$k" "$s" "$(ratio "$k" "$s")"

BLOB=$(ls "$WORK"/kb/* | head -1)
prep_kiln_apply() { rm -rf "$WORK/ka" "$WORK/ta"; mkdir -p "$WORK/ka"; }
kiln_apply() { "$KILN" debug layer apply "$BLOB" "$WORK/ka"; }
prep_tar_apply() { rm -rf "$WORK/ka" "$WORK/ta"; mkdir -p "$WORK/ta"; }
tar_apply() { zstd -q -dc "$BLOB" | tar -x -C "$WORK/ta"; }
echo "== apply"
ka=$(timeit kiln_apply); ta=$(timeit tar_apply)
printf '   kiln apply             %6.2fs\n   zstd -dc | tar -x      %6.2fs\n   ratio kiln/tar         %s\n' "$ka" "$ta" "$(ratio "$ka" "$ta")"

if command -v umoci >/dev/null; then
  # umoci (Debian's) reads gzip layers: a gzip blob of the same tree, in a one-layer image.
  "$KILN" debug layer export --compression gzip "$TREE" "$WORK/gz" >/dev/null
  GZ=$(ls "$WORK"/gz/* | head -1)
  prep_kiln_apply_gz() { rm -rf "$WORK/kg" "$WORK/ub"; mkdir -p "$WORK/kg"; }
  kiln_apply_gz() { "$KILN" debug layer apply "$GZ" "$WORK/kg"; }
  L=$WORK/layout; mkdir -p "$L/blobs/sha256"
  cp "$GZ" "$L/blobs/sha256/"
  ldig=sha256:$(basename "$GZ"); lsize=$(stat -c %s "$GZ")
  diffid=$(gzip -dc "$GZ" | sha256sum | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' "$diffid" >"$WORK/config.json"
  cdig=$(sha256sum "$WORK/config.json" | cut -d' ' -f1); cp "$WORK/config.json" "$L/blobs/sha256/$cdig"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$cdig" "$(stat -c %s "$WORK/config.json")" "$ldig" "$lsize" >"$WORK/manifest.json"
  mdig=$(sha256sum "$WORK/manifest.json" | cut -d' ' -f1); cp "$WORK/manifest.json" "$L/blobs/sha256/$mdig"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
    "$mdig" "$(stat -c %s "$WORK/manifest.json")" >"$L/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
  rootless=(); [ "$(id -u)" -ne 0 ] && rootless=(--rootless)
  prep_umoci_apply() { rm -rf "$WORK/kg" "$WORK/ub"; }
  umoci_apply() { umoci unpack "${rootless[@]}" --image "$L:bench" "$WORK/ub"; }
  if prep_umoci_apply && umoci_apply >/dev/null 2>&1; then
    kg=$(timeit kiln_apply_gz); ua=$(timeit umoci_apply)
    printf '   kiln apply (gzip)      %6.2fs\n   umoci unpack (gzip)    %6.2fs\n   ratio kiln/umoci       %s\n' "$kg" "$ua" "$(ratio "$kg" "$ua")"
  else
    echo "   umoci unpack failed on this image; skipped"
  fi
else
  echo "   umoci: not installed (apt-get install umoci); skipped"
fi
