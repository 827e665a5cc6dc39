#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for kiln (run as root; CI and scripts/demo call it):
# the packages kiln's tests and real-client checks use, an unprivileged user with
# subordinate ids (kiln-ci: full id mapping) and one without (kiln-ci-single: single
# mapping), and /dev/fuse usable by unprivileged users.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "setup-host.sh: run as root" >&2; exit 1; }

KILN_TEST_USER=${KILN_TEST_USER:-kiln-ci}
KILN_TEST_USER_SINGLE=${KILN_TEST_USER_SINGLE:-kiln-ci-single}
export DEBIAN_FRONTEND=noninteractive

echo "== installing packages"
apt-get update -qq
# fuse3: /dev/fuse users and fusermount3; uidmap: newuidmap/newgidmap;
# busybox-static: offline base images; openssh-client: a real ssh agent for
# RUN --mount=type=ssh; skopeo, umoci, podman (with runc): the real clients that must
# accept kiln's images; fuse-overlayfs, buildah, bc: the peers and tools the benchmarks
# compare with; tmux: a terminal for the test of the tty progress view; docker-registry,
# apache2-utils (htpasswd): the real registry the registry tests start on loopback;
# mmdebstrap: real Debian base images made offline from the package mirror.
apt-get install -y -qq --no-install-recommends fuse3 uidmap busybox-static \
  openssh-client skopeo umoci podman runc ca-certificates fuse-overlayfs buildah bc git tmux \
  docker-registry apache2-utils mmdebstrap \
  </dev/null >/dev/null

echo "== unprivileged users ${KILN_TEST_USER} (subordinate ids) and ${KILN_TEST_USER_SINGLE} (none)"
if ! id "$KILN_TEST_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$KILN_TEST_USER"
fi
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  grep -q "^${KILN_TEST_USER}:" "$f" || echo "${KILN_TEST_USER}:200000:65536" >>"$f"
done
if ! id "$KILN_TEST_USER_SINGLE" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$KILN_TEST_USER_SINGLE"
fi
sed -i "/^${KILN_TEST_USER_SINGLE}:/d" /etc/subuid /etc/subgid
# FUSE for unprivileged users (a new machine has /dev/fuse at 0600).
if [ -e /dev/fuse ]; then chmod 0666 /dev/fuse; fi

# A real Debian base for the real-world build test (tests/realworld_cli.rs), made from
# the package mirror with mmdebstrap (no image registry is reachable here); once.
base=/var/cache/kiln-tests/debian-bookworm.tar
# --format=tar: mmdebstrap picks the format from the target's extension otherwise, and
# the temporary name's ".tmp" would make it a directory. A directory left at either name
# by an earlier run is removed.
if [ ! -f "$base" ] || [ ! -s "$base" ]; then
  echo "== making a Debian bookworm base with mmdebstrap ($base)"
  mkdir -p "$(dirname "$base")"
  rm -rf "$base" "$base.tmp"
  mmdebstrap --quiet --format=tar --variant=minbase \
    --include=ca-certificates,python3,python3-venv \
    --skip=output/dev bookworm "$base.tmp" </dev/null
  mv "$base.tmp" "$base"
  chmod 0644 "$base"
fi
