#!/usr/bin/env bash
# build-guest.sh: build vspc's real QEMU test guest: a Debian cloud kernel plus a
# busybox initramfs whose /init gives a root shell on ttyS0.
#
# Usage:
#   test/support/guest/build-guest.sh [options]
#
# Options:
#   --variant NAME       build the initramfs variant NAME (default: base). Any
#                        --add/--add-bin/--module needs a variant other than base,
#                        so extra content never changes the base guest.
#   --add SRC:DEST       copy the file or directory SRC (on the host) to DEST (an
#                        absolute path in the guest). A directory is copied with its
#                        contents. Repeatable.
#   --add-bin PATH[:DEST]
#                        copy the executable PATH to DEST (default: the same path) and
#                        every shared library `ldd PATH` lists, at the same paths
#                        (for dropbear, a guest agent, ...). Repeatable.
#   --module NAME        also load the kernel module NAME (after the virtio ones), in
#                        the order given; the module file is shipped. Repeatable.
#   --force              rebuild the initramfs even when its stamp matches.
#   --print              print the manifest JSON path on stdout when done.
#   -h, --help           this text.
#
# Environment:
#   VSPC_GUEST_CACHE     cache directory (default: <repo>/.cache/guest)
#   VSPC_GUEST_VARIANT   default for --variant
#   VSPC_GUEST_ADD       whitespace-separated SRC:DEST entries, as --add
#   VSPC_GUEST_ADD_BIN   whitespace-separated PATH[:DEST] entries, as --add-bin
#   VSPC_GUEST_MODULES   whitespace-separated module names, as --module
#   VSPC_GUEST_KERNEL_PKG  exact kernel package (default: what the
#                        linux-image-cloud-amd64 metapackage depends on)
#
# What it does (each step skipped when its result is already in the cache):
#   1. resolves the exact kernel package `linux-image-<abi>-cloud-amd64` from the
#      metapackage's Depends, and the busybox-static version (apt-cache);
#   2. `apt-get download`s both (exact name=version, never a wildcard) into
#      CACHE/debs/, and extracts the kernel with `dpkg-deb -x` into CACHE/kernel/;
#   3. assembles the initramfs (busybox + applet links, /init, the virtio
#      modules, extra content) and packs it with cpio + gzip into
#      CACHE/variants/NAME/initramfs.cpio.gz;
#   4. writes CACHE/variants/NAME/guest.json (kernel, initrd, kernel release and
#      package version, ready marker, prompt), read by test/support/qemu.ts.
# The initramfs is stamp-based: a sha256 over this script, the package versions,
# the module list and the content of every added file. A second run with the same
# inputs does no work: the apt-cache answers are remembered too, keyed on the
# package lists, so it takes a few milliseconds.
#
# The guest's /init mounts proc, sys, devtmpfs, devpts (and tmpfs on /tmp, /run),
# loads virtio_ring, virtio, virtio_pci_legacy_dev, virtio_pci_modern_dev,
# virtio_pci, virtio_console (those present as module files) and any --module,
# sources /etc/vspc-init.d/*.sh (add hooks there with --add), lowers the kernel
# console log level, prints "VSPC-GUEST-READY <kernel release>" on ttyS0 and then
# runs `setsid cttyhack sh` on ttyS0 (a controlling tty, so job control and ^C
# work) with the prompt "guest# ", respawning the shell when it exits. ttyS1 and
# the virtio ports are left alone for the tests.
set -euo pipefail

orig_args=("$@")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${VSPC_GUEST_CACHE:-$repo/.cache/guest}
variant=${VSPC_GUEST_VARIANT:-base}
force=0
print=0
adds=()
addbins=()
modules=()
if [[ -n "${VSPC_GUEST_ADD:-}" ]]; then read -r -a adds <<<"$VSPC_GUEST_ADD"; fi
if [[ -n "${VSPC_GUEST_ADD_BIN:-}" ]]; then read -r -a addbins <<<"$VSPC_GUEST_ADD_BIN"; fi
if [[ -n "${VSPC_GUEST_MODULES:-}" ]]; then read -r -a modules <<<"$VSPC_GUEST_MODULES"; fi

readonly READY_MARKER=VSPC-GUEST-READY
readonly PROMPT='guest# '
readonly VIRTIO_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console)
readonly META_PKG=linux-image-cloud-amd64

die() { echo "build-guest.sh: $*" >&2; exit 1; }
log() { echo "build-guest.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --variant) [[ $# -ge 2 ]] || die "--variant needs a NAME"; variant=$2; shift 2 ;;
    --variant=*) variant=${1#*=}; shift ;;
    --add) [[ $# -ge 2 ]] || die "--add needs SRC:DEST"; adds+=("$2"); shift 2 ;;
    --add=*) adds+=("${1#*=}"); shift ;;
    --add-bin) [[ $# -ge 2 ]] || die "--add-bin needs PATH[:DEST]"; addbins+=("$2"); shift 2 ;;
    --add-bin=*) addbins+=("${1#*=}"); shift ;;
    --module) [[ $# -ge 2 ]] || die "--module needs a NAME"; modules+=("$2"); shift 2 ;;
    --module=*) modules+=("${1#*=}"); shift ;;
    --force) force=1; shift ;;
    --print) print=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ "$variant" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad variant name: $variant"
if [[ "$variant" == base && ( ${#adds[@]} -gt 0 || ${#addbins[@]} -gt 0 || ${#modules[@]} -gt 0 ) ]]; then
  die "--add/--add-bin/--module change the guest: give them a --variant NAME other than base"
fi
for a in "${adds[@]}"; do
  [[ "$a" == *:/* ]] || die "--add wants SRC:/absolute/dest, got: $a"
  [[ -e "${a%%:*}" ]] || die "--add source does not exist: ${a%%:*}"
done
for b in "${addbins[@]}"; do
  [[ -f "${b%%:*}" ]] || die "--add-bin source is not a file: ${b%%:*}"
  if [[ "$b" == *:* ]]; then [[ "${b#*:}" == /* ]] || die "--add-bin DEST must be absolute: $b"; fi
done
for m in "${modules[@]}"; do [[ "$m" =~ ^[A-Za-z0-9_-]+$ ]] || die "bad module name: $m"; done

for tool in apt-cache apt-get dpkg-deb cpio gzip sha256sum flock; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (run test/support/guest/ensure-deps.sh as root)"
done

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# One build at a time per cache (concurrent test runs share it).
exec 9>"$cache/.lock"
flock 9

# ---------------------------------------------------------------- resolve versions
apt_show() { apt-cache show --no-all-versions "$1" 2>/dev/null || true; }
field() { sed -n "s/^$1: //p" | head -n1; }

resolve() {
  local meta deps
  if [[ -n "${VSPC_GUEST_KERNEL_PKG:-}" ]]; then
    kpkg=$VSPC_GUEST_KERNEL_PKG
  else
    meta=$(apt_show "$META_PKG")
    [[ -n "$meta" ]] || return 1
    deps=$(field Depends <<<"$meta")
    # Exactly one linux-image-<abi>-cloud-amd64 is named there, e.g.
    # "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)".
    kpkg=$(grep -oE 'linux-image-[0-9][A-Za-z0-9.+-]*-cloud-amd64' <<<"$deps" | head -n1 || true)
    [[ -n "$kpkg" ]] || die "cannot find the kernel package in $META_PKG's Depends: $deps"
  fi
  kver=$(apt_show "$kpkg" | field Version)
  bbver=$(apt_show busybox-static | field Version)
  [[ -n "$kver" && -n "$bbver" ]]
}

# apt-cache takes most of a second per call here (apt keeps no binary cache), so
# the answer is remembered, keyed on the package lists it came from.
lists_key() {
  { echo "kernel-override ${VSPC_GUEST_KERNEL_PKG:-}"
    find /var/lib/apt/lists -maxdepth 1 -type f -name '*Packages*' -printf '%f %s %T@\n' 2>/dev/null | LC_ALL=C sort
  } | sha256sum | cut -d' ' -f1
}
resolved_file=$cache/resolved.env
key=$(lists_key)
kpkg='' kver='' bbver=''
if [[ -f "$resolved_file" ]]; then
  # shellcheck disable=SC1090
  . "$resolved_file"
  [[ "${resolved_key:-}" == "$key" && -n "$kpkg" && -n "$kver" && -n "$bbver" ]] || kpkg=''
fi
if [[ -z "$kpkg" ]]; then
  if ! resolve; then
    if [[ "$(id -u)" -eq 0 ]]; then
      log "apt-cache knows no $META_PKG/busybox-static: running apt-get update"
      apt-get update -q >&2 || log "apt-get update reported errors; trying anyway"
      key=$(lists_key)
    fi
    resolve || die "cannot resolve the kernel and busybox-static packages with apt-cache (no package lists? run 'apt-get update' as root)"
  fi
  printf 'resolved_key=%q\nkpkg=%q\nkver=%q\nbbver=%q\n' "$key" "$kpkg" "$kver" "$bbver" >"$resolved_file"
fi

# ------------------------------------------------------------------- fast path
vdir=$cache/variants/$variant
manifest=$vdir/guest.json
script_sum=$(sha256sum "$0" | cut -d' ' -f1)

# A stable description of a file or directory tree's content.
content_sum() {
  local src=$1
  if [[ -d "$src" ]]; then
    (cd "$src" && find . -printf '%p %y %m %l\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum) | sha256sum | cut -d' ' -f1
  else
    { stat -L -c '%a' "$src"; sha256sum <"$src"; } | sha256sum | cut -d' ' -f1
  fi
}
# The shared libraries an executable needs (absolute paths, including the loader).
libs_of() {
  ldd "$1" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | LC_ALL=C sort -u
}

stamp_input() {
  echo "script $script_sum"
  echo "kernel $kpkg $kver"
  echo "busybox $bbver"
  echo "modules ${VIRTIO_MODULES[*]} ${modules[*]}"
  local a b lib
  for a in "${adds[@]}"; do echo "add ${a#*:} $(content_sum "${a%%:*}")"; done
  for b in "${addbins[@]}"; do
    echo "bin $b $(content_sum "${b%%:*}")"
    while read -r lib; do [[ -n "$lib" ]] && echo "lib $lib $(content_sum "$lib")"; done < <(libs_of "${b%%:*}")
  done
}
stamp=$(stamp_input | sha256sum | cut -d' ' -f1)

krel_dir=$cache/kernel/${kpkg}_${kver}
if [[ $force -eq 0 && -f "$vdir/stamp" && "$(cat "$vdir/stamp")" == "$stamp" && -f "$vdir/initramfs.cpio.gz" && -f "$manifest" && -f "$krel_dir/vmlinuz" ]]; then
  [[ $print -eq 1 ]] && echo "$manifest"
  exit 0
fi

# -------------------------------------------------------------------- download
# apt-get download name=version into CACHE/debs/NAME/VERSION/ unless already there;
# sets $fetched to the .deb (not run in a subshell: it may restart the script).
fetch_deb() {
  local pkg=$1 ver=$2 dir deb
  dir=$cache/debs/$pkg/${ver//:/%3a}
  deb=$(find "$dir" -maxdepth 1 -name '*.deb' -print -quit 2>/dev/null || true)
  if [[ -z "$deb" ]]; then
    mkdir -p "$dir.tmp"
    log "downloading $pkg=$ver"
    # As root, apt's _apt sandbox user may not be able to write into the cache.
    if ! (cd "$dir.tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2); then
      rm -rf "$dir.tmp"
      # Stale package lists name versions the archive no longer has: as root,
      # refresh them once and start over (resolving the versions anew).
      if [[ "$(id -u)" -eq 0 && -z "${VSPC_GUEST_LISTS_UPDATED:-}" ]]; then
        log "apt-get download $pkg=$ver failed: running apt-get update and starting over"
        apt-get update -q >&2 || log "apt-get update reported errors; trying anyway"
        rm -f "$resolved_file"
        exec 9>&-
        VSPC_GUEST_LISTS_UPDATED=1 exec bash "$0" "${orig_args[@]}"
      fi
      die "apt-get download $pkg=$ver failed (stale package lists? run 'apt-get update' as root)"
    fi
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    deb=$(find "$dir" -maxdepth 1 -name '*.deb' -print -quit)
    [[ -n "$deb" ]] || die "apt-get download $pkg=$ver produced no .deb"
  fi
  fetched=$deb
}

if [[ ! -f "$krel_dir/vmlinuz" ]]; then
  fetch_deb "$kpkg" "$kver"
  kdeb=$fetched
  log "extracting $(basename "$kdeb")"
  rm -rf "$krel_dir.tmp"
  mkdir -p "$krel_dir.tmp/root"
  dpkg-deb -x "$kdeb" "$krel_dir.tmp/root"
  vmlinuz=$(find "$krel_dir.tmp/root/boot" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
  [[ -n "$vmlinuz" ]] || die "no boot/vmlinuz-* in $kdeb"
  krel=${vmlinuz##*/vmlinuz-}
  [[ -d "$krel_dir.tmp/root/lib/modules/$krel" ]] || die "no lib/modules/$krel in $kdeb"
  mv "$vmlinuz" "$krel_dir.tmp/vmlinuz"
  mv "$krel_dir.tmp/root/lib/modules/$krel" "$krel_dir.tmp/modules"
  echo "$krel" >"$krel_dir.tmp/release"
  rm -rf "$krel_dir.tmp/root" "$krel_dir"
  mv "$krel_dir.tmp" "$krel_dir"
fi
krel=$(cat "$krel_dir/release")
kmods=$krel_dir/modules

bb_dir=$cache/busybox/$bbver
if [[ ! -x "$bb_dir/busybox" ]]; then
  fetch_deb busybox-static "$bbver"
  bdeb=$fetched
  rm -rf "$bb_dir.tmp"
  mkdir -p "$bb_dir.tmp/root"
  dpkg-deb -x "$bdeb" "$bb_dir.tmp/root"
  [[ -x "$bb_dir.tmp/root/bin/busybox" ]] || die "no bin/busybox in $bdeb"
  mv "$bb_dir.tmp/root/bin/busybox" "$bb_dir.tmp/busybox"
  rm -rf "$bb_dir.tmp/root" "$bb_dir"
  mv "$bb_dir.tmp" "$bb_dir"
fi

# ------------------------------------------------------------ assemble the root
log "building initramfs variant '$variant' (kernel $krel, busybox $bbver)"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/vspc-init.d,proc,sys,dev,tmp,run,root,lib/modules/"$krel"}
chmod 1777 "$root/tmp"

install -m 0755 "$bb_dir/busybox" "$root/bin/busybox"
# Applet links, at the paths busybox itself names (bin/sh, usr/bin/awk, ...).
while read -r applet; do
  [[ -z "$applet" || "$applet" == bin/busybox ]] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)
[[ -L "$root/bin/sh" ]] || die "busybox did not list bin/sh"

# Kernel modules: a module built into the kernel needs no file; one that is
# neither there nor built in is skipped (virtio) or an error (--module).
: >"$root/etc/vspc-modules"
add_module() {
  local name=$1 required=$2 rel src
  src=$(find "$kmods/kernel" -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" | head -n1)
  if [[ -z "$src" ]]; then
    if grep -qE "/$name\.ko$" "$kmods/modules.builtin" 2>/dev/null; then return 0; fi
    if [[ $required -eq 1 ]]; then die "kernel $krel has no module $name"; fi
    log "note: kernel $krel has no module $name (skipped)"
    return 0
  fi
  rel=${src#"$kmods"/}
  mkdir -p "$root/lib/modules/$krel/$(dirname "$rel")"
  case "$src" in
    *.ko.xz) rel=${rel%.xz}; xz -dc "$src" >"$root/lib/modules/$krel/$rel" ;;
    *.ko.zst) rel=${rel%.zst}; zstd -qdc "$src" >"$root/lib/modules/$krel/$rel" ;;
    *) cp "$src" "$root/lib/modules/$krel/$rel" ;;
  esac
  echo "$rel" >>"$root/etc/vspc-modules"
}
for m in "${VIRTIO_MODULES[@]}"; do add_module "$m" 0; done
for m in "${modules[@]}"; do add_module "$m" 1; done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
EOF
echo /bin/sh >"$root/etc/shells"
echo guest >"$root/etc/hostname"
cat >"$root/etc/profile" <<EOF
export PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
export PS1='$PROMPT'
EOF

cat >"$root/init" <<EOF
#!/bin/sh
# /init of vspc's test guest (generated by test/support/guest/build-guest.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node: take the console now that devtmpfs has one.
exec 0</dev/console 1>/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
hostname -F /etc/hostname
ip link set lo up 2>/dev/null
krel=\$(uname -r)
while read -r m; do
  [ -n "\$m" ] || continue
  insmod "/lib/modules/\$krel/\$m" || echo "vspc-init: insmod \$m failed"
done </etc/vspc-modules
for f in /etc/vspc-init.d/*.sh; do
  [ -r "\$f" ] && . "\$f"
done
# Keep kernel messages (e.g. "random: crng init done") off the console from here on.
dmesg -n 1
echo "$READY_MARKER \$krel" >/dev/ttyS0
export PS1='$PROMPT'
# A serial tty has no window size (0x0): give one wide enough that the shell's line
# editor never wraps a long command line (wrapping adds redraw sequences to the echo).
stty -F /dev/ttyS0 rows 50 cols 250 2>/dev/null
while :; do
  # setsid + cttyhack: the shell leads its own session with ttyS0 as its
  # controlling tty, so job control and ^C work.
  setsid cttyhack sh
  echo "vspc-init: shell exited, starting a new one" >/dev/ttyS0
done
EOF
chmod 0755 "$root/init"

# Extra content.
for a in "${adds[@]}"; do
  src=${a%%:*} dest=${a#*:}
  mkdir -p "$root$(dirname "$dest")"
  if [[ -d "$src" ]]; then
    mkdir -p "$root$dest"
    cp -a "$src/." "$root$dest/"
  else
    cp -a "$src" "$root$dest"
  fi
done
for b in "${addbins[@]}"; do
  src=${b%%:*}
  dest=$src
  [[ "$b" == *:* ]] && dest=${b#*:}
  mkdir -p "$root$(dirname "$dest")"
  install -m 0755 "$src" "$root$dest"
  while read -r lib; do
    [[ -n "$lib" ]] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done < <(libs_of "$src")
done

# ------------------------------------------------------------------------ pack
mkdir -p "$vdir"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --reproducible --quiet) \
  | gzip -n -6 >"$work/initramfs.cpio.gz"

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
{
  echo "{"
  echo "  \"variant\": $(json_str "$variant"),"
  echo "  \"kernel\": $(json_str "$krel_dir/vmlinuz"),"
  echo "  \"initrd\": $(json_str "$vdir/initramfs.cpio.gz"),"
  echo "  \"kernelRelease\": $(json_str "$krel"),"
  echo "  \"kernelPackage\": $(json_str "$kpkg"),"
  echo "  \"kernelVersion\": $(json_str "$kver"),"
  echo "  \"busyboxVersion\": $(json_str "$bbver"),"
  echo "  \"readyMarker\": $(json_str "$READY_MARKER"),"
  echo "  \"prompt\": $(json_str "$PROMPT"),"
  echo "  \"stamp\": $(json_str "$stamp")"
  echo "}"
} >"$work/guest.json"

mv "$work/initramfs.cpio.gz" "$vdir/initramfs.cpio.gz"
mv "$work/guest.json" "$manifest"
echo "$stamp" >"$vdir/stamp"
log "built $vdir/initramfs.cpio.gz ($(du -h "$vdir/initramfs.cpio.gz" | cut -f1))"

# Drop kernels and packages of earlier versions (about 130 MB per kernel); a variant
# built on one is rebuilt on the current one the next time it is asked for.
for d in "$cache"/kernel/*/; do
  [[ -d "$d" && "${d%/}" != "$krel_dir" ]] && { log "removing old kernel ${d%/}"; rm -rf "${d%/}"; }
done
for d in "$cache"/debs/*/*/; do
  d=${d%/}
  case "$d" in
    "$cache/debs/$kpkg/${kver//:/%3a}"|"$cache/debs/busybox-static/${bbver//:/%3a}") ;;
    *) [[ -d "$d" ]] && rm -rf "$d" ;;
  esac
done
find "$cache/debs" -mindepth 1 -maxdepth 1 -type d -empty -delete
[[ $print -eq 1 ]] && echo "$manifest"
exit 0
