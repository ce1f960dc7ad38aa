#!/usr/bin/env bash
# build-agent.sh: build vspc's C guest agent (src/agent/c/) as a static binary.
#
# Usage:
#   packaging/build-agent.sh [--force] [--print] [--out DIR]
#
# Output (never committed):
#   DIR/vspc-agent            the agent, static, stripped
#   DIR/vspc-agent-selftest   the framing self-test (spec test vectors, filter modes)
#   DIR/build.json            compiler, flags, size, stamp
# DIR is --out, else $VSPC_AGENT_OUT, else <repo>/.cache/agent.
#
# Compiler: musl-gcc (Debian's musl-tools) with -static -O2 when present, else
# `gcc -static` (glibc; bigger, and glibc warns about nothing here since the agent
# resolves no names), else cc. $CC overrides the choice. Stamp-based: a second run
# with the same sources, script and compiler does nothing.
#
# The binary needs nothing at run time: copy it to the guest (e.g. /usr/local/sbin)
# and start it with packaging/vspc-agent.service or packaging/vspc-agent.init.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
src=$repo/src/agent/c
out=${VSPC_AGENT_OUT:-$repo/.cache/agent}
force=0
print=0

die() { echo "build-agent.sh: $*" >&2; exit 1; }
log() { echo "build-agent.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) force=1; shift ;;
    --print) print=1; shift ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a DIR"; out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# Compiler choice.
if [[ -n "${CC:-}" ]]; then
  cc=$CC; static=(-static)
elif command -v musl-gcc >/dev/null; then
  cc=musl-gcc; static=(-static)
elif command -v gcc >/dev/null; then
  cc=gcc; static=(-static)
  log "note: musl-gcc not found (apt-get install musl-tools): building with glibc's gcc -static"
elif command -v cc >/dev/null; then
  cc=cc; static=(-static)
else
  die "no C compiler (install musl-tools, or gcc)"
fi

version=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$repo/package.json" | head -n1)
# -O2, not -Os: the per-byte work (CRC, COBS) runs 1.5-2x faster under TCG emulation
# (docs/performance.md, serial tunnels), for about 4 KB more binary.
cflags=(-std=c11 -O2 -Wall -Wextra -Wno-unused-parameter "-DVSPC_AGENT_VERSION=\"${version:-0}\""
        -fno-strict-aliasing -ffunction-sections -fdata-sections)
ldflags=("${static[@]}" -Wl,--gc-sections -s)

mkdir -p "$out"
out=$(cd "$out" && pwd)
sources=("$src/tunnel.h" "$src/tunnel.c" "$src/vspc-agent.c" "$src/selftest.c")
stamp=$({
  sha256sum "$0" "${sources[@]}" | cut -d' ' -f1
  echo "$cc ${cflags[*]} ${ldflags[*]}"
  "$cc" --version 2>/dev/null | head -n1 || true
} | sha256sum | cut -d' ' -f1)

if [[ $force -eq 0 && -x "$out/vspc-agent" && -x "$out/vspc-agent-selftest" && -f "$out/stamp" && "$(cat "$out/stamp")" == "$stamp" ]]; then
  [[ $print -eq 1 ]] && echo "$out/vspc-agent"
  exit 0
fi

exec 9>"$out/.lock"
flock 9
tmp=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building with $cc: $out/vspc-agent"
"$cc" "${cflags[@]}" -o "$tmp/vspc-agent" "$src/vspc-agent.c" "$src/tunnel.c" "${ldflags[@]}" -lm
"$cc" "${cflags[@]}" -o "$tmp/vspc-agent-selftest" "$src/selftest.c" "$src/tunnel.c" "${ldflags[@]}"
"$tmp/vspc-agent-selftest" >"$tmp/selftest.tap" || { cat "$tmp/selftest.tap" >&2; die "the framing self-test failed"; }
size=$(stat -c %s "$tmp/vspc-agent")
linkage=static
if command -v file >/dev/null && ! file "$tmp/vspc-agent" | grep -q 'statically linked'; then linkage=unknown; fi
cat >"$tmp/build.json" <<EOF
{
  "binary": "$out/vspc-agent",
  "selftest": "$out/vspc-agent-selftest",
  "compiler": "$cc",
  "cflags": "${cflags[*]//\"/\\\"}",
  "linkage": "$linkage",
  "size": $size,
  "version": "${version:-0}",
  "stamp": "$stamp"
}
EOF
mv "$tmp/vspc-agent" "$tmp/vspc-agent-selftest" "$tmp/build.json" "$out/"
echo "$stamp" >"$out/stamp"
log "built $out/vspc-agent ($size bytes, $cc, $linkage)"
[[ $print -eq 1 ]] && echo "$out/vspc-agent"
exit 0
