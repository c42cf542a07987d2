#!/usr/bin/env bash
# Build the stand-in VPS base image offline: a debootstrapped Debian with systemd,
# imported into podman. Cached: a second run reuses the image.
#
#   NEO_STANDIN_SUITE   Debian suite          (default bookworm)
#   NEO_STANDIN_FRESH=1 a fresh image: only what Ansible needs (systemd, dbus, python3,
#                       python3-apt, sudo, procps), none of the packages the roles install,
#                       so the first converge really installs them from the mirror
#                       (default: 1 for trixie, 0 for bookworm)
#   NEO_STANDIN_IMAGE   image name           (default localhost/neo-vps-standin:debian12 for
#                       bookworm, localhost/neo-vps-standin:debian13-fresh for a fresh trixie)
#   NEO_STANDIN_MIRROR  Debian mirror URL     (default: the host's apt mirror)
#   NEO_STANDIN_REBUILD=1 forces a rebuild.
set -euo pipefail

suite=${NEO_STANDIN_SUITE:-bookworm}
case "$suite" in
  bookworm) version=12 ;;
  trixie) version=13 ;;
  *) echo "error: NEO_STANDIN_SUITE=$suite: use bookworm (Debian 12) or trixie (Debian 13)" >&2; exit 2 ;;
esac
if [ "$suite" = trixie ]; then fresh=${NEO_STANDIN_FRESH:-1}; else fresh=${NEO_STANDIN_FRESH:-0}; fi
if [ "$fresh" = 1 ]; then default_image=localhost/neo-vps-standin:debian$version-fresh; else default_image=localhost/neo-vps-standin:debian$version; fi
image=${NEO_STANDIN_IMAGE:-$default_image}
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

default_mirror() {
  # The mirror the host's apt already uses, so the build needs no other network.
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(awk '/^deb / && !/security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${NEO_STANDIN_MIRROR:-$(default_mirror)}

# openssh-server: `make bench` provisions one stand-in over SSH (pipelining), as a real VPS is.
packages=systemd,systemd-sysv,dbus,sudo,python3,python3-yaml,python3-apt,sqlite3,logrotate,procps,openssh-server
# A fresh image holds only what molecule and Ansible need to reach the box.
[ "$fresh" != 1 ] || packages=systemd,systemd-sysv,dbus,sudo,python3,python3-apt,procps
# The image records its package list; an image built from another list is rebuilt.
label=neo.standin.packages

# Two builds of one image at once (make test's lanes: faults and molecule each make image) build it
# once: the second waits here for the first, then finds the image cached (a lock per user: podman's
# images are per user). podman never holds the lock (8>&-): a process it leaves running would keep it.
exec 8>"/var/tmp/neo-standin-build.$(id -u).$(printf '%s' "$image" | tr -c 'A-Za-z0-9.-' _).lock"
flock 8

if [ "${NEO_STANDIN_REBUILD:-0}" != 1 ] && podman image exists "$image" 8>&-; then
  cached=$(podman image inspect -f "{{ index .Labels \"$label\" }}" "$image" 2>/dev/null 8>&- || true)
  if [ "$cached" = "$packages" ]; then
    echo "stand-in image $image is cached; NEO_STANDIN_REBUILD=1 rebuilds it"
    exit 0
  fi
  echo "stand-in image $image was built with other packages (${cached:-unknown}); rebuilding"
fi

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing; run 'make deps' (as root)" >&2; exit 1; }
done

rootfs=$(mktemp -d /var/tmp/neo-standin-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $suite from $mirror into $rootfs (about a minute)"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  echo "error: debootstrap failed; last lines of $rootfs.log:" >&2; tail -n 20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# A container has no consoles to serve and no kernel modules to load.
chroot "$rootfs" systemctl mask getty@tty1.service serial-getty@console.service \
  systemd-udevd.service systemd-modules-load.service sys-kernel-config.mount >/dev/null 2>&1 || true
# sshd stays off unless a stand-in asks for it (the bench starts it); its host keys are
# made per container at that moment, not baked into the image.
chroot "$rootfs" systemctl disable ssh.service >/dev/null 2>&1 || true
rm -f "$rootfs"/etc/ssh/ssh_host_*
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
# No package lists, and none fresh: a real image's lists date from its build, so the roles'
# cache_valid_time refreshes them (apt judges the lists' age by this directory's mtime).
mkdir -p "$rootfs"/var/lib/apt/lists/partial
touch -d @0 "$rootfs"/var/lib/apt/lists
echo "neo-vps-standin" >"$rootfs/etc/hostname"

tar -C "$rootfs" -c . | podman import 8>&- --change 'CMD ["/sbin/init"]' --change "LABEL $label=$packages" - "$image" >/dev/null
echo "built stand-in image $image"
