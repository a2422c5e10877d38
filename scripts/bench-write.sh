#!/usr/bin/env bash
# Writes to a fresh 1 GiB qcow2 (allocating): fio 4 KiB random write (psync, O_DIRECT, 1 and 4
# jobs, 256 MiB each pass) and 1 MiB sequential write (1 GiB), through vdiskfs and through
# qemu-storage-daemon's writable FUSE export, interleaved A B A B; `qemu-img check` after each run
# must be clean. Prints medians and ratios. Needs root.
set -euo pipefail
VDISKFS=${1:-vdiskfs}
RUNS=${RUNS:-3}
work=$(mktemp -d /tmp/vdiskfs-wbench.XXXXXX)
qsd_pid=""
cleanup() {
  set +e
  [ -n "$qsd_pid" ] && kill -TERM "$qsd_pid" 2>/dev/null && wait "$qsd_pid" 2>/dev/null
  mountpoint -q "$work/mnt" && fusermount3 -u "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt"
touch "$work/qsd.raw"

# $1 target file, $2 workload → IOPS (random) or MB/s (sequential)
workload() {
  case $2 in
    rand1) fio --name=w --filename="$1" --rw=randwrite --bs=4k --size=256M --direct=1 --ioengine=psync \
             --numjobs=1 --randrepeat=0 --output-format=terse --terse-version=3 | awk -F';' '{ print $49 }' ;;
    rand4) fio --name=w --filename="$1" --rw=randwrite --bs=4k --size=64M --offset_increment=256M --direct=1 \
             --ioengine=psync --numjobs=4 --group_reporting --randrepeat=0 --output-format=terse --terse-version=3 \
             | awk -F';' '{ print $49 }' ;;
    seq) fio --name=w --filename="$1" --rw=write --bs=1M --size=1G --direct=1 --ioengine=psync \
           --output-format=terse --terse-version=3 | awk -F';' '{ printf "%d\n", $48 / 1000 }' ;;
  esac
}
fresh() { rm -f "$work/vm.qcow2"; qemu-img create -q -f qcow2 "$work/vm.qcow2" 1G; }
check() { qemu-img check -q "$work/vm.qcow2" || { echo "qemu-img check failed after $1" >&2; exit 1; }; }

run_vdiskfs() {
  fresh
  "$VDISKFS" "$work/vm.qcow2" "$work/mnt"
  workload "$work/mnt/disk.raw" "$1"
  fusermount3 -u "$work/mnt"
  while pgrep -f "^$VDISKFS $work/vm.qcow2" >/dev/null; do sleep 0.05; done
  check "vdiskfs $1"
}
run_qsd() {
  fresh
  qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$work/vm.qcow2,cache.direct=off" \
    --blockdev driver=qcow2,node-name=q,file=f \
    --export "type=fuse,id=e,node-name=q,mountpoint=$work/qsd.raw,writable=on" >/dev/null 2>&1 &
  qsd_pid=$!
  for _ in $(seq 1 100); do mountpoint -q "$work/qsd.raw" && break; sleep 0.05; done
  workload "$work/qsd.raw" "$1"
  kill -TERM "$qsd_pid"; wait "$qsd_pid" || true; qsd_pid=""
  check "qemu-storage-daemon $1"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "| workload | vdiskfs | qemu-storage-daemon | vdiskfs / qsd |"
echo "|---|---|---|---|"
for w in rand1 rand4 seq; do
  v=(); q=()
  for _ in $(seq 1 "$RUNS"); do v+=("$(run_vdiskfs $w)"); q+=("$(run_qsd $w)"); done
  vm=$(printf '%s\n' "${v[@]}" | median); qm=$(printf '%s\n' "${q[@]}" | median)
  unit=$([ $w = seq ] && echo "MB/s" || echo "IOPS")
  printf '| %s | %s %s (%s) | %s %s (%s) | %s× |\n' "$w" "$vm" "$unit" "${v[*]}" "$qm" "$unit" "${q[*]}" \
    "$(awk -v a="$vm" -v b="$qm" 'BEGIN { printf "%.2f", a / b }')"
done
