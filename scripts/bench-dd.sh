#!/usr/bin/env bash
# Sequential read of a 1 GiB fully allocated qcow2 (64 KiB clusters, incompressible data):
# `dd bs=1M` of vdiskfs's disk.raw vs qemu-storage-daemon's FUSE export vs the raw file, runs
# interleaved A B A B, each from a fresh mount (so no FUSE page cache is reused), host cache warm
# and cold. Prints medians in MB/s and the ratios. Needs root. The full `make bench` of the
# performance issue builds on this.
set -euo pipefail
VDISKFS=${1:-vdiskfs}
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-1024}
work=$(mktemp -d /tmp/vdiskfs-bench.XXXXXX)
qsd_pid=""
cleanup() {
  set +e
  [ -n "$qsd_pid" ] && kill -TERM "$qsd_pid" 2>/dev/null && wait "$qsd_pid" 2>/dev/null
  mountpoint -q "$work/mnt" && fusermount3 -u "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt"
head -c "${SIZE_MB}M" /dev/urandom > "$work/disk.raw"
qemu-img convert -O qcow2 -o cluster_size=65536 "$work/disk.raw" "$work/vm.qcow2"
touch "$work/qsd.raw"

mbps() { # dd's bytes and seconds → MB/s
  dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/copied/ { for (i=1;i<=NF;i++) if ($i=="s,") print int($1/$(i-1)/1e6) }'
}
drop() { [ "$1" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; } || cat "$work/vm.qcow2" > /dev/null; }

run_vdiskfs() {
  drop "$1"
  "$VDISKFS" "$work/vm.qcow2" "$work/mnt"
  mbps "$work/mnt/disk.raw"
  fusermount3 -u "$work/mnt"
}
run_qsd() {
  drop "$1"
  qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$work/vm.qcow2,cache.direct=off" \
    --blockdev driver=qcow2,node-name=q,file=f \
    --export "type=fuse,id=e,node-name=q,mountpoint=$work/qsd.raw" >/dev/null 2>&1 &
  qsd_pid=$!
  for _ in $(seq 1 100); do mountpoint -q "$work/qsd.raw" && break; sleep 0.05; done
  mbps "$work/qsd.raw"
  # SIGTERM, not fusermount3 -u (which leaves QEMU 7.2 spinning).
  kill -TERM "$qsd_pid"; wait "$qsd_pid" || true; qsd_pid=""
}
run_raw() { drop "$1"; [ "$1" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }; mbps "$work/disk.raw"; }

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "| cache | vdiskfs MB/s | qemu-storage-daemon MB/s | raw file MB/s | vdiskfs / qsd | vdiskfs / raw |"
echo "|---|---|---|---|---|---|"
for cache in warm cold; do
  v=(); q=(); r=()
  for _ in $(seq 1 "$RUNS"); do
    v+=("$(run_vdiskfs $cache)"); q+=("$(run_qsd $cache)"); r+=("$(run_raw $cache)")
  done
  vm=$(printf '%s\n' "${v[@]}" | median); qm=$(printf '%s\n' "${q[@]}" | median); rm_=$(printf '%s\n' "${r[@]}" | median)
  printf '| %s | %s (%s) | %s (%s) | %s | %.2f× | %.2f× |\n' "$cache" "$vm" "${v[*]}" "$qm" "${q[*]}" "$rm_" \
    "$(awk -v a="$vm" -v b="$qm" 'BEGIN { print a / b }')" "$(awk -v a="$vm" -v b="$rm_" 'BEGIN { print a / b }')"
done
