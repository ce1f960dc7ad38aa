#!/usr/bin/env bash
# Builds the benchmark's do-nothing C relay (bench/relay.c) with gcc: OUT defaults to
# dist/bench/relay-c. Called by the benchmark when a run needs it; the binary is never
# committed (dist/ is ignored). Exits 3 when gcc is missing (the benchmark then reports
# the C relay's figures as n/a).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/relay.c"
out="${1:-$here/../dist/bench/relay-c}"
command -v gcc >/dev/null 2>&1 || { echo "build-relay.sh: gcc not found" >&2; exit 3; }
mkdir -p "$(dirname "$out")"
if [[ -x "$out" && "$out" -nt "$src" ]]; then exit 0; fi
gcc -O2 -Wall -Wextra -o "$out.tmp.$$" "$src"
mv "$out.tmp.$$" "$out"
