#!/usr/bin/env bash
# kiln's test command (the one the README names and CI runs):
#   1. formatting and lints: cargo fmt --check, cargo clippy --all-targets -D warnings;
#   2. the whole workspace's tests as the calling user;
#   3. when run as root and $KILN_TEST_USER (default kiln-ci) exists, the same test
#      binaries again as that unprivileged user: rootless is tested, not claimed.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
# A section's heading, with the seconds since the start (where CI's time goes).
section() { echo "== $* (at ${SECONDS}s)"; }
# Whether test binary $1 is one of the end-to-end builds run again on kiln's FUSE overlay.
fuse_pass_test() {
  case "$1" in build_cli-* | examples_cli-* | cache_cli-* | copy_cli-*) return 0 ;; *) return 1 ;; esac
}

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

section "cargo doc (the library API documents itself without warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps -p kiln-executor -p kiln-snapshotter

section "cargo test (as $(id -un))"
# The binaries (kiln, and kiln-overlay: the mount program, which the battery runs
# through too) and every test, in one build: built apart, with `-p`, their dependencies'
# features would differ from the workspace's and some thirty crates compile twice.
cargo build --quiet --workspace --bins --tests
# The test binaries (examples, executor/examples, are built by cargo test but not run).
tests_list=$(mktemp /tmp/kiln-tests.XXXXXX)
cargo test --workspace --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//' | grep -v '/examples/' | sort -u >"$tests_list"
# Every skip is said on stderr ("skipped: why"); the count is printed after each pass
# (under CI a skip that should not happen fails its test).
skips=$(mktemp /tmp/kiln-skips.XXXXXX)
trap 'rm -f "$skips" "$tests_list"' EXIT
count_skips() {
  local n
  n=$(grep -c '^skipped: ' "$skips" || true)
  section "$1: $n skipped"
  grep '^skipped: ' "$skips" | sort | uniq -c || true
  : >"$skips"
}
KILN_OVERLAY_PROGRAM="$root_dir/target/debug/kiln-overlay" cargo test --workspace 2> >(tee -a "$skips" >&2)
count_skips "cargo test (as $(id -un))"

section "end-to-end builds again on kiln's FUSE overlay (KILN_SNAPSHOTTER=fuse)"
# The test binaries built above, run as cargo runs them (from their package's directory).
fuse_failed=0
while read -r exe; do
  fuse_pass_test "$(basename "$exe")" || continue
  echo "-- $(basename "$exe") (KILN_SNAPSHOTTER=fuse, at ${SECONDS}s)"
  if ! (cd "$root_dir/tests" && KILN_SNAPSHOTTER=fuse KILN_BIN="$root_dir/target/debug/kiln" \
    "$exe" --quiet 2> >(tee -a "$skips" >&2)); then
    fuse_failed=$((fuse_failed + 1))
  fi
done <"$tests_list"
if [ "$fuse_failed" -ne 0 ]; then
  echo "FUSE pass: $fuse_failed test binaries failed"
  exit 1
fi
count_skips "FUSE pass"

user=${KILN_TEST_USER:-kiln-ci}
if [ "$(id -u)" -ne 0 ] || ! id "$user" >/dev/null 2>&1; then
  section "unprivileged pass: skipped (needs root and user '$user'; .ci/run sets it up)"
  exit 0
fi

section "cargo test as unprivileged user '$user'"
# The checkout may sit where the user cannot read (e.g. under /root), so the test
# binaries, the kiln binary and the conformance data are staged in a world-readable
# directory, and tests find them through KILN_BIN / KILN_CONFORMANCE_DIR.
stage=$(mktemp -d /tmp/kiln-unpriv.XXXXXX)
trap 'rm -rf "$stage" "$skips" "$tests_list"' EXIT
mkdir -p "$stage/bin" "$stage/home"
cp "$tests_list" "$stage/tests.txt"
while read -r exe; do cp "$exe" "$stage/bin/"; done <"$stage/tests.txt"
cp target/debug/kiln "$stage/bin/kiln"
cp target/debug/kiln-overlay "$stage/bin/kiln-overlay"
for d in "$root_dir/shared/conformance" "$root_dir/../shared/conformance"; do
  if [ -d "$d" ]; then cp -r "$d" "$stage/conformance"; break; fi
done
chmod -R a+rX "$stage"
chmod 1777 "$stage/home"

# Runs every test binary as user $1, with extra environment $2.
run_as() {
  local as=$1 extra=$2 failed=0
  for exe in "$stage"/bin/*; do
    name=$(basename "$exe")
    case "$name" in kiln | kiln-overlay) continue ;; esac
    echo "-- $name (as $as, at ${SECONDS}s)"
    # shellcheck disable=SC2086
    if ! (cd "$stage/home" && runuser -u "$as" -- env -i \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME="$stage/home" CI="${CI:-}" KILN_BIN="$stage/bin/kiln" \
      KILN_OVERLAY_PROGRAM="$stage/bin/kiln-overlay" \
      KILN_CONFORMANCE_DIR="$stage/conformance" $extra "$exe" --quiet 2> >(tee -a "$skips" >&2)); then
      failed=$((failed + 1))
    fi
    # The end-to-end builds once more on kiln's FUSE overlay.
    if fuse_pass_test "$name"; then
      echo "-- $name (as $as, KILN_SNAPSHOTTER=fuse, at ${SECONDS}s)"
      # shellcheck disable=SC2086
      if ! (cd "$stage/home" && runuser -u "$as" -- env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME="$stage/home" CI="${CI:-}" KILN_BIN="$stage/bin/kiln" KILN_SNAPSHOTTER=fuse \
        $extra "$exe" --quiet 2> >(tee -a "$skips" >&2)); then
        failed=$((failed + 1))
      fi
    fi
  done
  return "$failed"
}

if ! run_as "$user" ""; then
  echo "unprivileged pass ($user): test binaries failed"
  exit 1
fi
count_skips "unprivileged pass ($user)"
single=${KILN_TEST_USER_SINGLE:-kiln-ci-single}
if id "$single" >/dev/null 2>&1; then
  section "cargo test as unprivileged user '$single' (no subordinate ids: single mapping)"
  if ! run_as "$single" "KILN_TEST_IDS=single"; then
    echo "unprivileged pass ($single): test binaries failed"
    exit 1
  fi
  count_skips "unprivileged pass ($single)"
fi
section "unprivileged pass: all test binaries passed"
