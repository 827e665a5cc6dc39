#!/usr/bin/env bash
# Runs pjdfstest (the Rust rewrite, from crates.io) against a kiln-overlay mount and against
# kernel overlayfs on the same kind of stack, as root, and prints both summaries, the cases
# kiln fails, and any case kiln fails that kernel overlayfs passes (then exits 1): an
# overlay is right where it fails as overlayfs does. What both fail, for example:
#   *::char           pjdfstest makes character devices 0/0, which is the overlay format's
#                     whiteout: refused with EPERM.
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
trap 'umount -l "$work/m" 2>/dev/null || true; umount -l "$work/km" 2>/dev/null || true; rm -rf "$work"' EXIT
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
umount "$work/m"
# The reference: kernel overlayfs, empty lower, the same settings.
mkdir -p "$work/kl" "$work/ku" "$work/kw" "$work/km"
mount -t overlay overlay -o "lowerdir=$work/kl,upperdir=$work/ku,workdir=$work/kw" "$work/km"
(cd "$work/km" && "$tools/bin/pjdfstest" -c "$work/pjdfstest.toml" -p "$work/km" >"$work/kernel" 2>&1) || true
umount "$work/km"
grep -E 'FAILED$' "$work/out" | sort || true
echo "kiln-overlay:     $(grep Summary "$work/out")"
echo "kernel overlayfs: $(grep Summary "$work/kernel")"
failed() { grep -E 'FAILED$' "$1" | awk '{print $1}' | sort; }
only=$(comm -23 <(failed "$work/out") <(failed "$work/kernel"))
if [ -n "$only" ]; then
  echo "failed on kiln-overlay only:"
  echo "$only"
  exit 1
fi
echo "every case kiln-overlay fails, kernel overlayfs fails too"
