#!/usr/bin/env bash
# Installs kiln into PREFIX/bin (default /usr/local): the `kiln` binary and the mount
# program `kiln-overlay` (so `mount -t fuse.kiln-overlay` and containers/storage's
# `mount_program = "/usr/local/bin/kiln-overlay"` find it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
(cd "$here" && cargo build --release --quiet -p kiln-cli -p kiln-snapshotter --bin kiln --bin kiln-overlay)
install -d "$prefix/bin"
install -m 0755 "$here/target/release/kiln" "$prefix/bin/kiln"
# An earlier install made kiln-overlay a link to kiln: replace it.
rm -f "$prefix/bin/kiln-overlay"
install -m 0755 "$here/target/release/kiln-overlay" "$prefix/bin/kiln-overlay"
echo "installed $prefix/bin/kiln and $prefix/bin/kiln-overlay"
