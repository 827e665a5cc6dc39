#!/usr/bin/env bash
# Runs pjdfstest (the Rust rewrite, from crates.io) against a kiln-overlay mount, as root,
# and prints its summary and the failing cases. Expected failures, and why they are right
# for an overlay:
#   *::char           pjdfstest makes character devices 0/0, which is the overlay format's
#                     whiteout: refused with EPERM, as kernel overlayfs refuses it.
# The upper directory's path is longer than the mount point's, as in kiln's store: a path
# near PATH_MAX inside the mount is past PATH_MAX there (the `*::enametoolong_path` cases
# pass only because every layer path is resolved from the layer's open root, never whole).
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "fuse-posix-suite.sh: run as root (pjdfstest switches users)" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
tools=${PJDFSTEST_ROOT:-/tmp/kiln-pjdfstest}
[ -x "$tools/bin/pjdfstest" ] || cargo install --quiet pjdfstest --root "$tools"
(cd "$here" && cargo build --quiet -p kiln-snapshotter --bin kiln-overlay)
work=$(mktemp -d)
trap 'umount -l "$work/m" 2>/dev/null || true; rm -rf "$work"' EXIT
upper=$work/upper-of-the-overlay-longer-than-its-mount-point
mkdir -p "$work/l" "$upper" "$work/w" "$work/m"
ln -s "$here/target/debug/kiln-overlay" "$work/kiln-overlay"
cat >"$work/pjdfstest.toml" <<'TOML'
[features]
posix_fallocate = {}
utimensat = {}
utime_now = {}
rename_ctime = {}
[settings]
naptime = 0.01
allow_remount = false
expected_failures = []
[dummy_auth]
entries = [["nobody", "nogroup"], ["kiln-ci", "kiln-ci"]]
TOML
"$work/kiln-overlay" -o "lowerdir=$work/l,upperdir=$upper,workdir=$work/w" "$work/m"
(cd "$work/m" && "$tools/bin/pjdfstest" -c "$work/pjdfstest.toml" -p "$work/m" >"$work/out" 2>&1) || true
grep -E 'FAILED$' "$work/out" | sort || true
grep Summary "$work/out"
