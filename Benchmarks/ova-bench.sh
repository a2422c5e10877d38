#!/usr/bin/env bash
# vdiskfs appliance benchmark (issue 20): reading the disk of an OVA in place against unpacking it
# first, the way a user gets at an appliance's disk today.
#
#   Benchmarks/ova-bench.sh /path/to/vdiskfs      (root; `make bench` runs it after bench.sh)
#
# Environment: SIZE_MB (1024), RUNS (5), QUICK=1 (128 MiB, 2 runs), NOTE.
#
# The appliance: a SIZE_MB raw disk, three quarters compressible data (random bytes mapped onto
# 16 letters: deflate keeps a bit over half of it) and every fourth MiB zeros; converted by
# qemu-img to a streamOptimized VMDK (`qemu-img convert -O vmdk -o subformat=streamOptimized`), described by an
# OVF written here and packed with it by `tar --format=ustar` into app.ova. Two ways to the bytes
# of the disk, each timed from its first command to the last byte read, the archive in the page
# cache before each run (read once, untimed):
#   in-place  `vdiskfs -o ro app.ova MNT`, then `dd bs=1M` of MNT/disks/1-disk.vmdk/disk.raw
#   unpacked  `tar xf app.ova` into a fresh directory, `vdiskfs -o ro` of the extracted VMDK, then
#             the same dd of MNT/disk.raw (the tar step is also reported alone)
# Every way's disk.raw is first compared with the source (cmp) on a mount of its own, untimed.
# Runs interleave the ways (in-place, unpacked, in-place, ...); every run is a fresh mount, and
# the extracted files are removed after each run, untimed.
# Results: Benchmarks/results/<timestamp>-ova.md (and on stdout): medians of RUNS, MB/s of the
# disk's virtual size, and unpacked / in-place (time).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
VDISKFS=$(realpath "${1:?usage: ova-bench.sh VDISKFS_BINARY}")
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MB=${SIZE_MB:-128} RUNS=${RUNS:-2}
else
  SIZE_MB=${SIZE_MB:-1024} RUNS=${RUNS:-5}
fi
[ "$(id -u)" = 0 ] || { echo "ova-bench.sh needs root (FUSE mounts)" >&2; exit 1; }
for tool in qemu-img tar python3 fusermount3 cmp; do
  command -v "$tool" >/dev/null || { echo "ova-bench.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/vdiskfs-ova-bench.XXXXXX)
mkdir -p "$work/mnt"
cleanup() {
  [ "$BASHPID" = "$$" ] || return 0
  set +e
  is_mounted "$work/mnt" && fusermount3 -u "$work/mnt"
  for _ in $(seq 1 250); do pgrep -f "^$VDISKFS .*$work/mnt" >/dev/null || break; sleep 0.02; done
  pkill -f "^$VDISKFS .*$work/mnt" 2>/dev/null
  is_mounted "$work/mnt" && umount -l "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

unmount_vdiskfs() {
  fusermount3 -u "$work/mnt"
  for _ in $(seq 1 500); do pgrep -f "^$VDISKFS .*$work/mnt" >/dev/null || return 0; sleep 0.02; done
  echo "vdiskfs did not exit after unmounting $work/mnt" >&2
  return 1
}
now() { date +%s%N; }

make_appliance() {
  log "making a ${SIZE_MB} MiB disk and its OVA"
  python3 - "$work/disk.raw" "$SIZE_MB" <<'EOF'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
# 16 symbols: 4 bits of entropy per byte, so deflate (and streamOptimized grains) about halve it.
table = bytes(b"abcdefghijklmnop"[i & 15] for i in range(256))
with open(path, "wb") as f:
    for i in range(mib):
        f.write(b"\0" * (1 << 20) if i % 4 == 3 else os.urandom(1 << 20).translate(table))
EOF
  mkdir "$work/app"
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$work/disk.raw" "$work/app/disk.vmdk"
  local vmdk_size capacity
  vmdk_size=$(stat -c %s "$work/app/disk.vmdk")
  capacity=$((SIZE_MB << 20))
  cat >"$work/app/app.ovf" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="disk.vmdk" ovf:id="file1" ovf:size="$vmdk_size"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:capacity="$capacity" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
</Envelope>
EOF
  tar --format=ustar -C "$work/app" -cf "$work/app.ova" app.ovf disk.vmdk
  rm -rf "$work/app"
  log "app.ova: $(stat -c %s "$work/app.ova") bytes for a $capacity-byte disk"
}

# check WAY: one untimed mount of WAY's disk, compared with the source.
check() {
  local disk
  if [ "$1" = in-place ]; then
    "$VDISKFS" -o ro "$work/app.ova" "$work/mnt"
    disk="$work/mnt/disks/1-disk.vmdk/disk.raw"
  else
    mkdir "$work/x"
    tar -C "$work/x" -xf "$work/app.ova"
    "$VDISKFS" -o ro "$work/x/disk.vmdk" "$work/mnt"
    disk="$work/mnt/disk.raw"
  fi
  wait_readable "$disk"
  if ! cmp -s "$disk" "$work/disk.raw"; then
    echo "MISMATCH: $1 disk.raw differs from the source disk" >&2
    exit 1
  fi
  unmount_vdiskfs
  rm -rf "$work/x"
}

tsv="$work/results.tsv"
: >"$tsv"
record() { printf '%s\t%s\t%s\n' "$@" >>"$tsv"; } # way step nanoseconds

in_place() {
  local start end
  start=$(now)
  "$VDISKFS" -o ro "$work/app.ova" "$work/mnt"
  wait_readable "$work/mnt/disks/1-disk.vmdk/disk.raw"
  dd if="$work/mnt/disks/1-disk.vmdk/disk.raw" of=/dev/null bs=1M status=none
  end=$(now)
  record in-place total $((end - start))
  unmount_vdiskfs
}
unpacked() {
  local start untarred end
  start=$(now)
  mkdir "$work/x"
  tar -C "$work/x" -xf "$work/app.ova"
  untarred=$(now)
  "$VDISKFS" -o ro "$work/x/disk.vmdk" "$work/mnt"
  wait_readable "$work/mnt/disk.raw"
  dd if="$work/mnt/disk.raw" of=/dev/null bs=1M status=none
  end=$(now)
  record unpacked total $((end - start))
  record unpacked tar $((untarred - start))
  record unpacked mount+dd $((end - untarred))
  unmount_vdiskfs
  rm -rf "$work/x"
  sync
}

make_appliance
log "checking both ways against the source"
check in-place
check unpacked
for run in $(seq 1 "$RUNS"); do
  log "round $run of $RUNS"
  cat "$work/app.ova" >/dev/null
  in_place
  cat "$work/app.ova" >/dev/null
  unpacked
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$here/results/$stamp-ova.md"
mkdir -p "$here/results"
python3 - "$tsv" "$out" "$SIZE_MB" "$RUNS" "$(stat -c %s "$work/app.ova")" "$(uname -r)" \
  "$("$VDISKFS" --version 2>/dev/null | head -1)" "${NOTE:-}" <<'EOF'
import collections, statistics, sys
tsv, out, size, runs, ova, kernel, version, note = sys.argv[1:9]
size, ova = int(size), int(ova)
values = collections.defaultdict(list)
for line in open(tsv):
    way, step, ns = line.rstrip("\n").split("\t")
    values[(way, step)].append(int(ns) / 1e9)
def med(key):
    v = values.get(key)
    return statistics.median(v) if v else None
def secs(x):
    return "-" if x is None else f"{x:.2f}"
def rate(x):
    return "-" if not x else f"{size * 1048576 / x / 1e6:,.0f}"
a, b = med(("in-place", "total")), med(("unpacked", "total"))
lines = [f"# OVA benchmark ({size} MiB disk, {ova:,} byte .ova, medians of {runs})", "",
         f"kernel {kernel}; {version}" + (f"; {note}" if note else ""), "",
         "Sequential read (dd bs=1M) of the appliance's disk, from the first command to the last byte;",
         "MB/s of the disk's virtual size.", "",
         "| way | seconds | MB/s |", "|---|---|---|",
         f"| in place: vdiskfs app.ova + dd | {secs(a)} | {rate(a)} |",
         f"| unpacked: tar xf + vdiskfs disk.vmdk + dd | {secs(b)} | {rate(b)} |",
         f"| ... of which tar xf | {secs(med(('unpacked', 'tar')))} | |",
         f"| ... of which vdiskfs disk.vmdk + dd | {secs(med(('unpacked', 'mount+dd')))} | {rate(med(('unpacked', 'mount+dd')))} |",
         "", "unpacked / in place (time): " + ("-" if not a or b is None else f"{b / a:.2f}"), "",
         "Every run's values (tsv: way, step, nanoseconds):", "", "```"] + [l.rstrip() for l in open(tsv)] + ["```"]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
EOF
log "results: $out"
