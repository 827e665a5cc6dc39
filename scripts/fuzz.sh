#!/usr/bin/env bash
# The property-based harnesses (proptest, in the #[cfg(test)] modules next to the code)
# with many more cases than `cargo test` runs: the Dockerfile parser, word/shell
# expansion, the .dockerignore / glob matcher, the OCI store readers (index, manifests,
# configs, docker and OCI archives) and layer apply.
#   scripts/fuzz.sh            # 20000 cases per harness
#   PROPTEST_CASES=500000 scripts/fuzz.sh
# A failure prints proptest's minimal failing input; every case must also finish within
# the harness's time limit (a hang fails like a panic).
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES=${PROPTEST_CASES:-20000}
echo "== $PROPTEST_CASES cases per harness"
cargo test --release -p kiln-executor --lib -- \
  dockerfile::parser::tests::never_panics \
  dockerfile::shell::tests::never_panics \
  dockerfile::shell::tests::nested_expansions_and_patterns_end \
  context::pattern::glob::tests::any_pattern \
  context::pattern::glob::tests::an_escaped_pattern \
  context::ignore::tests::any_dockerignore \
  store::tests::store_readers_never_panic_or_escape \
  store::tests::docker_manifests_never_panic_or_escape
cargo test --release -p kiln-snapshotter --lib -- apply::tests::fuzz::
