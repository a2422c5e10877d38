#!/usr/bin/env bash
# The main job of vdiskfs, end to end: a qcow2 image holding a GPT disk with an ext4 partition is
# mounted; the partition inside /…/disk.raw is attached to a loop device and mounted; a file is read.
# Needs root (loop devices and mounts). Cleans up in every path.
set -euo pipefail
VDISKFS=${1:-vdiskfs}
work=$(mktemp -d /tmp/vdiskfs-demo.XXXXXX)
mnt=$work/mnt
root=$work/root
loopdev=""

cleanup() {
  set +e
  mountpoint -q "$root" && umount "$root"
  [ -n "$loopdev" ] && losetup -d "$loopdev"
  mountpoint -q "$mnt" && fusermount3 -u "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "Make a sample VM disk: 256 MiB, GPT, one ext4 partition with some files, stored as qcow2"
mkdir -p "$mnt" "$root" "$work/files/etc"
echo "Hello from inside a qcow2 image, read through vdiskfs." > "$work/files/hello.txt"
echo "demo-vm" > "$work/files/etc/hostname"
head -c 8M /dev/urandom > "$work/files/random.bin"
truncate -s 256M "$work/disk.img"
sgdisk -o -n 1:2048:+200M -t 1:8300 -c 1:root "$work/disk.img" >/dev/null  # (-q would make it write nothing)
mkfs.ext4 -q -F -L root -d "$work/files" -E offset=$((2048 * 512)) "$work/disk.img" 200M
show qemu-img convert -c -O qcow2 "$work/disk.img" "$work/vm.qcow2"
rm "$work/disk.img"
show "$VDISKFS" info "$work/vm.qcow2"

step "Mount it: $mnt/disk.raw is the guest disk"
show "$VDISKFS" "$work/vm.qcow2" "$mnt" -o ro
show ls -l "$mnt"
show sgdisk -p "$mnt/disk.raw"

step "Attach the ext4 partition inside disk.raw and mount it"
# Kernels with partition-table support can use: losetup -r -P -f --show disk.raw → /dev/loopNp1.
# This machine's kernel has no MSDOS/EFI partition parsers, so attach by offset from the table:
read -r start size < <(sfdisk -J "$mnt/disk.raw" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][0]
print(p["start"] * 512, p["size"] * 512)')
echo "partition 1: offset $start, size $size"
loopdev=$(losetup -r -f --show -o "$start" --sizelimit "$size" "$mnt/disk.raw")
show mount -o ro "$loopdev" "$root"
show ls -l "$root"

step "Read a file from the guest file system"
show cat "$root/hello.txt"
if cmp -s "$root/random.bin" "$work/files/random.bin"; then
  echo "random.bin: 8 MiB read back through qcow2 → vdiskfs → loop → ext4, identical to the original"
else
  echo "random.bin differs from the original" >&2
  exit 1
fi

step "Or without offsets: vdiskfs shows each partition as its own file"
umount "$root"
losetup -d "$loopdev"
loopdev=""
show ls -l "$mnt/partitions"
show mount -o loop,ro "$mnt/partitions/p1.raw" "$root"
show cat "$root/etc/hostname"

step "Clean up: unmount the partition, unmount vdiskfs"
umount "$root"
show fusermount3 -u "$mnt"
echo "demo finished"
