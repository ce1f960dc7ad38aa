#!/usr/bin/env bash
# ensure-deps.sh: make sure the Debian packages that the real-QEMU-guest tests
# need are installed.
#
# Usage: test/support/guest/ensure-deps.sh [--check]
#
#   - Everything installed: prints nothing, exits 0 (one dpkg-query call, a no-op).
#   - Something missing, running as root: installs it with apt-get
#     (--no-install-recommends; runs `apt-get update` only if the install fails,
#     e.g. because the package lists are missing or stale), then exits 0.
#   - Something missing, not root (or --check given): prints what is missing and
#     how to install it, exits 1.
#
# Extra packages can be named in VSPC_GUEST_EXTRA_DEPS (space separated).
set -euo pipefail

PACKAGES=(
  qemu-system-x86   # qemu-system-x86_64 (TCG)
  busybox-static    # the guest's userland (build-guest.sh also `apt-get download`s it)
  cpio              # packs the initramfs
  gzip              # compresses the initramfs
  socat             # ad-hoc serial-socket bridging in tests
  tmux              # terminal-level tests
  telnet            # a real telnet client
  telnet-ssl        # the verifying telnets command certs/README.md shows (test/ops/tls-docs.test.ts)
  openssh-client    # ssh over the later serial tunnel; the SSH front door tests (test/e2e/ssh*.test.ts)
  musl-tools        # musl-gcc: packaging/build-agent.sh builds the static C guest agent
  dropbear-bin      # dropbear: the SSH server in the tunnel test guest (variant tunnel-ssh)
  openssh-sftp-server  # sftp-server for that guest: today's scp speaks SFTP
  conserver-server conserver-client  # test/e2e/conserver.test.ts: conserver layered on a vspc port (docs/conserver.md)
  zsh               # test/ops/completion.test.ts: the zsh completion script runs in a real zsh
  groff-base        # test/ops/man-pages.test.ts: the man pages render without warnings
  passwd            # useradd/groupadd: permission tests with a second unix user
  util-linux        # runuser, script, prlimit
  screen            # a legacy program on a console's pty (access-pty test)
  postgresql        # test/storage/pg-*.test.ts: a throwaway PostgreSQL server for the cluster store (docs/decisions/0011-pg.md)
  procps            # pgrep: the stall tests stop PostgreSQL's backends by PID (test/e2e/cluster-*-pg-stall.test.ts)
)
if [[ -n "${VSPC_GUEST_EXTRA_DEPS:-}" ]]; then
  read -r -a extra <<<"${VSPC_GUEST_EXTRA_DEPS}"
  PACKAGES+=("${extra[@]}")
fi

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "ensure-deps.sh: unknown argument: $1" >&2; exit 2 ;;
esac

missing_packages() {
  local pkg status
  local -a out=()
  # One dpkg-query for all packages; packages dpkg has never heard of are absent
  # from its output (it complains on stderr), so compare name by name.
  declare -A installed=()
  while IFS=' ' read -r pkg status; do
    [[ "$status" == "ii" ]] && installed["$pkg"]=1
  done < <(dpkg-query -W -f='${binary:Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for pkg in "${PACKAGES[@]}"; do
    # dpkg may print name:arch for multi-arch packages
    if [[ -z "${installed[$pkg]:-}" && -z "${installed[$pkg:amd64]:-}" ]]; then out+=("$pkg"); fi
  done
  printf '%s\n' "${out[@]}"
}

mapfile -t missing < <(missing_packages | sed '/^$/d')
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $check_only -eq 1 || "$(id -u)" -ne 0 ]]; then
  echo "ensure-deps.sh: missing Debian packages needed by the QEMU guest tests: ${missing[*]}" >&2
  echo "ensure-deps.sh: install them as root:  apt-get install -y --no-install-recommends ${missing[*]}" >&2
  echo "ensure-deps.sh: (or run this script as root: $0)" >&2
  exit 1
fi

echo "ensure-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
install() {
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}
if ! install; then
  echo "ensure-deps.sh: install failed; running apt-get update and retrying" >&2
  # Some configured sources may be unreachable here; a partial update is still useful.
  apt-get update -q >&2 || echo "ensure-deps.sh: apt-get update reported errors; retrying the install anyway" >&2
  install
fi

mapfile -t still < <(missing_packages | sed '/^$/d')
if [[ ${#still[@]} -ne 0 ]]; then
  echo "ensure-deps.sh: still missing after install: ${still[*]}" >&2
  exit 1
fi
