#!/bin/sh
# A tiny test runner: one passing check per line of the artifact.
# $2: a cache directory the runner may use across builds.
[ -n "${2:-}" ] && date > "$2/last-run"
n=0
while read -r line; do
  n=$((n + 1))
  echo "ok $n - artifact line: $line"
done < "$1"
echo "1..$n"
