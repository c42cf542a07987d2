#!/usr/bin/env bash
# Build the VM stand-in for `make vm-faults` (issue 15): a Debian 12 disk image with the
# real engine unit, drop-ins and neo-db hooks, booted by QEMU (TCG) for real power cuts
# (kill -9 of qemu loses the guest's page cache) and a real NFS mount.
#
# Two cached layers in $NEO_VM_CACHE (default .cache/vm):
#   1. base-<hash>.tar: debootstrap bookworm with the package list below (about 2-3 min);
#      rebuilt only when the package list, the suite or BASE_VERSION changes.
#   2. base.raw (+ vmlinuz, initrd.img, label): layer 1 provisioned by site.yml --skip-tags
#      hetzner,host (the host baseline's sshd and nftables are molecule's, not this suite's), run against a podman container of layer 1 (the same roles, templates and
#      code an operator's converge installs, as in `make faults`), then exported into an
#      ext4 image. Rebuilt when layer 1, site.yml, roles/, group_vars/, library/, action_plugins/, scripts/ or this
#      script change (about 1-2 min; uses podman: run it under the podman lock).
# Each test boots its own qcow2 overlay of base.raw, so the image itself is never written.
#
#   NEO_VM_CACHE        cache dir             (default <repo>/.cache/vm)
#   NEO_STANDIN_MIRROR  Debian mirror URL     (default: the host's apt mirror)
#   NEO_VM_REBUILD=1    rebuilds both layers.
#   NEO_PODMAN_LOCK     a lock file taken (flock) around the podman part
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${NEO_VM_CACHE:-$repo/.cache/vm}
suite=bookworm
BASE_VERSION=1
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/standin/containers.conf}

# REFERENCE.md's VM list, plus what the roles install (sudo, python3-apt, logrotate,
# prometheus-node-exporter) so the converge installs nothing from the network.
packages=linux-image-amd64,systemd,systemd-sysv,udev,dbus,openssh-server,python3,python3-yaml,sqlite3,iproute2,kmod,procps,e2fsprogs,nfs-kernel-server,nfs-common,sudo,python3-apt,logrotate,prometheus-node-exporter

missing=""
for tool in debootstrap qemu-system-x86_64 qemu-img mkfs.ext4 podman ssh-keygen ansible-playbook sha256sum; do
  command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "error: missing:$missing. Run 'make deps venv' as root (apt: qemu-system-x86 qemu-utils debootstrap podman e2fsprogs openssh-client; ansible-playbook is in .venv/bin)" >&2
  exit 1
fi

default_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(awk '/^deb / && !/security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${NEO_STANDIN_MIRROR:-$(default_mirror)}
mkdir -p "$cache"
[ "${NEO_VM_REBUILD:-0}" != 1 ] || rm -f "$cache"/base-*.tar "$cache/label"

# SSH key for the tests (root's authorized_keys in the image).
[ -f "$cache/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C neo-vm-tests -f "$cache/id_ed25519"

base_hash=$(printf '%s\n' "$suite" "$packages" "$BASE_VERSION" | sha256sum | cut -c1-16)
base_tar=$cache/base-$base_hash.tar
if [ ! -f "$base_tar" ]; then
  rootfs=$(mktemp -d /var/tmp/neo-vm-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  echo "vm: debootstrap $suite from $mirror into $rootfs (2-3 min)"
  start=$SECONDS
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    echo "error: debootstrap failed; last lines of $rootfs.log:" >&2; tail -n 20 "$rootfs.log" >&2; exit 1; }
  ls "$rootfs"/boot/vmlinuz-* "$rootfs"/boot/initrd.img-* >/dev/null 2>&1 || {
    echo "error: debootstrap left no kernel or initrd in $rootfs/boot" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" --numeric-owner -cf "$base_tar.tmp" .
  mv "$base_tar.tmp" "$base_tar"
  rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
  echo "vm: base layer $base_tar built in $((SECONDS - start)) s"
  find "$cache" -maxdepth 1 -name 'base-*.tar' ! -name "base-$base_hash.tar" -delete
fi

# Layer 2's label: layer 1 and everything the converge installs.
label=$( (echo "$base_hash"; cd "$repo" && find site.yml ansible.cfg roles group_vars library action_plugins scripts vm/build-image.sh -type f ! -path '*/__pycache__/*' -print0 \
  | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
if [ -f "$cache/base.raw" ] && [ "$(cat "$cache/label" 2>/dev/null)" = "$label" ]; then
  echo "vm: image $cache/base.raw is cached (label $label); NEO_VM_REBUILD=1 rebuilds it"
  exit 0
fi

# Podman is shared on some machines: NEO_PODMAN_LOCK=FILE takes that lock for this part only.
if [ -n "${NEO_PODMAN_LOCK:-}" ]; then exec 9>"$NEO_PODMAN_LOCK"; echo "vm: waiting for $NEO_PODMAN_LOCK"; flock 9; fi
start=$SECONDS
image=localhost/neo-vm-rootfs:$base_hash
box=neo-vm-provision-$$
rootfs=$(mktemp -d /var/tmp/neo-vm-image.XXXXXX)
work=$(mktemp -d /var/tmp/neo-vm-work.XXXXXX)
cleanup() { podman rm -f "$box" >/dev/null 2>&1 || true; rm -rf "$rootfs" "$work"; }
trap cleanup EXIT
podman image exists "$image" || podman import --change 'CMD ["/sbin/init"]' "$base_tar" "$image" >/dev/null
podman run -d --name "$box" --hostname neo-vm --systemd=always "$image" /sbin/init >/dev/null
for _ in $(seq 1 180); do
  state=$(podman exec "$box" systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.5
done
cat >"$work/inventory.yml" <<INV
neo_vps:
  hosts:
    $box:
      ansible_connection: containers.podman.podman
      ansible_python_interpreter: /usr/bin/python3
INV
echo "vm: provisioning with site.yml --skip-tags hetzner,host (podman container $box)"
(cd "$repo" && ANSIBLE_CONFIG="$repo/ansible.cfg" ANSIBLE_NOCOLOR=1 ansible-playbook -i "$work/inventory.yml" site.yml --skip-tags hetzner,host >"$work/converge.log" 2>&1) || {
  echo "error: site.yml failed on the VM image's container; last lines:" >&2; tail -n 40 "$work/converge.log" >&2; exit 1; }
podman stop -t 10 "$box" >/dev/null
podman export "$box" | tar -C "$rootfs" --numeric-owner -xpf -
podman rm -f "$box" >/dev/null

# What a VM needs and a container did not: network, a login for the tests, a quiet boot.
echo neo-vm >"$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 neo-vm\n' >"$rootfs/etc/hosts"
printf 'nameserver 10.0.2.3\n' >"$rootfs/etc/resolv.conf"
printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' >"$rootfs/etc/systemd/network/20-en.network"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$cache/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
[ -n "$(ls "$rootfs"/etc/ssh/ssh_host_*_key 2>/dev/null)" ] || chroot "$rootfs" ssh-keygen -A >/dev/null
rm -f "$rootfs/etc/machine-id"; systemd-machine-id-setup --root="$rootfs" >/dev/null
rm -rf "$rootfs"/var/log/journal/* "$rootfs"/var/lib/apt/lists/*
chroot "$rootfs" systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1
# Boot time under TCG (2-3 min on a loaded 2-core host, 30 s on an idle one): off at boot go
# e2scrub_reap, the NFS server and client (the NFS test starts the server itself), node_exporter
# and the 5-minute neo-db-metrics timer (monitoring is not under test here, and a metrics run in
# the middle of a cut test would take the state lock), and the daily housekeeping timers. The
# engine unit, its drop-ins, the holders socket and the prune/drill timers stay as installed.
for unit in e2scrub_reap.service e2scrub_all.timer nfs-server.service nfs-client.target rpcbind.service rpcbind.socket \
  prometheus-node-exporter.service prometheus-node-exporter-apt.timer prometheus-node-exporter-nvme.timer \
  prometheus-node-exporter-smartmon.timer prometheus-node-exporter-ipmitool-sensor.timer prometheus-node-exporter-mellanox-hca-temp.timer \
  neo-db-metrics.timer dpkg-db-backup.timer fstrim.timer logrotate.timer apt-daily.timer apt-daily-upgrade.timer; do
  chroot "$rootfs" systemctl disable "$unit" >/dev/null 2>&1 || true
done
printf '/export 127.0.0.1(rw,sync,no_subtree_check,no_root_squash)\n' >"$rootfs/etc/exports"
mkdir -p "$rootfs/export" "$rootfs/mnt/nfs"
cp "$(ls "$rootfs"/boot/vmlinuz-* | tail -n1)" "$work/vmlinuz"
cp "$(ls "$rootfs"/boot/initrd.img-* | tail -n1)" "$work/initrd.img"

truncate -s 3G "$work/base.raw"
mkfs.ext4 -q -F -L neo-vm -d "$rootfs" "$work/base.raw"
for f in vmlinuz initrd.img base.raw; do mv "$work/$f" "$cache/$f"; done
echo "$label" >"$cache/label"
echo "vm: image $cache/base.raw built in $((SECONDS - start)) s (label $label)"
