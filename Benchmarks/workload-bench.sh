#!/usr/bin/env bash
# vdiskfs real-workload benchmark (issue 19): an ext4 file system inside a qcow2, attached through a
# loop device to disk.raw, used the way a user uses a guest disk on the host.
#
#   Benchmarks/workload-bench.sh /path/to/vdiskfs      (root; `make bench` runs it after bench.sh)
#
# Environment: SIZE_MB (2048), FILES (30000), RAND_MB (512), RUNS (3), FIO_TIME (10 s), QUICK=1
# (512 MiB, 6000 files, 128 MiB, 1 run, 4 s), MOUNT_OPTIONS (extra -o for vdiskfs), WAYS (vdiskfs
# qsd raw: which of the three to run), NOTE.
#
# The image: a SIZE_MB ext4 made here (mkfs.ext4 on a raw file), holding a tree of FILES files
# (sizes from 1 KiB to 1 MiB, most small, as in a system's /usr; incompressible data) and one
# RAND_MB file for random reads; converted to qcow2 with qemu-img. Three ways to the same ext4:
#   vdiskfs  `vdiskfs img.qcow2 MNT` (the default, read-write mount), loop device on MNT/disk.raw
#   qsd      qemu-storage-daemon's FUSE export of img.qcow2 (writable, as vdiskfs's), loop device
#   raw      a loop device on the raw file the qcow2 was made from
# The loop devices are read-only and the ext4 mounted `ro,noload`. Workloads, each with the page
# cache dropped first (the host's copy of the image files too):
#   tar  `tar cf - .` of the tree into a pipe (GNU tar does not read the files' data when its
#        archive is /dev/null itself), seconds
#   fio  4 KiB random reads (O_DIRECT, psync, 1 job) on the RAND_MB file, IOPS
# Floors (issue 19): tar at >= 0.95x the raw loop (time: raw / vdiskfs); fio >= 2x qsd and
# >= 1.0x the raw loop.
# Results: Benchmarks/results/<timestamp>-workload.md (and on stdout).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
VDISKFS=$(realpath "${1:?usage: workload-bench.sh VDISKFS_BINARY}")
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
repo=$(cd "$here/.." && pwd)
if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MB=${SIZE_MB:-512} FILES=${FILES:-6000} RAND_MB=${RAND_MB:-128} RUNS=${RUNS:-1} FIO_TIME=${FIO_TIME:-4}
else
  SIZE_MB=${SIZE_MB:-2048} FILES=${FILES:-30000} RAND_MB=${RAND_MB:-512} RUNS=${RUNS:-3} FIO_TIME=${FIO_TIME:-10}
fi
[ "$(id -u)" = 0 ] || { echo "workload-bench.sh needs root (FUSE mounts, loop devices)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/vdiskfs-workload-bench.XXXXXX)
mkdir -p "$work"/{mnt,fs}
touch "$work/qsd.raw"
loop="" qsd_pid=""

cleanup() {
  [ "$BASHPID" = "$$" ] || return 0
  set +e
  is_mounted "$work/fs" && umount "$work/fs"
  [ -n "$loop" ] && losetup -d "$loop"
  is_mounted "$work/mnt" && fusermount3 -u "$work/mnt"
  if [ -n "$qsd_pid" ]; then kill -TERM "$qsd_pid"; wait "$qsd_pid" 2>/dev/null; fi
  is_mounted "$work/qsd.raw" && umount -l "$work/qsd.raw"
  pkill -f "^$VDISKFS .*$work/mnt" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# See bench.sh: on this VM a page-cache page from memory the balloon reported free faults in the
# host first; touching and freeing the memory before a timed run keeps that out of the figures.
prefault() { [ "${PREFAULT:-1}" = 1 ] && python3 -c "b = bytearray($(((SIZE_MB + 512) << 20))); b[::4096] = b'\x01' * len(b[::4096])" || true; }

make_image() {
  log "making a ${SIZE_MB} MiB ext4 with $FILES files and a $RAND_MB MiB file"
  truncate -s "${SIZE_MB}M" "$work/img.raw"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/img.raw"
  mount -o loop "$work/img.raw" "$work/fs"
  python3 - "$work/fs/tree" "$FILES" <<'EOF'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(19)
block = os.urandom(1 << 20)
for i in range(count):
    d = os.path.join(root, f"d{i // 500:03d}", f"s{(i // 50) % 10}")
    os.makedirs(d, exist_ok=True)
    # Most files small, a few large (a system tree's shape): 1 KiB .. 1 MiB.
    size = min(1 << 20, int(1024 * rng.paretovariate(0.9)))
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        start = rng.randrange(0, len(block) - size + 1)
        f.write(block[start:start + size])
EOF
  head -c "${RAND_MB}M" /dev/urandom >"$work/fs/rand.bin"
  tree_bytes=$(find "$work/fs/tree" -type f -printf '%s\n' | awk '{ n += $1 } END { print n }')
  tree_mb=$((tree_bytes >> 20))
  umount "$work/fs"
  qemu-img convert -f raw -O qcow2 "$work/img.raw" "$work/img.qcow2"
}

attach() { # way → the ext4 mounted on $work/fs
  case $1 in
    vdiskfs)
      "$VDISKFS" "$work/img.qcow2" "$work/mnt" ${MOUNT_OPTIONS:+-o "$MOUNT_OPTIONS"}
      wait_readable "$work/mnt/disk.raw"
      loop=$(losetup -r -f --show "$work/mnt/disk.raw")
      ;;
    qsd)
      qemu-storage-daemon --blockdev "driver=file,filename=$work/img.qcow2,node-name=f" \
        --blockdev "driver=qcow2,node-name=q,file=f" \
        --export "type=fuse,id=e,node-name=q,mountpoint=$work/qsd.raw,writable=on" >/dev/null 2>&1 &
      qsd_pid=$!
      wait_readable "$work/qsd.raw"
      loop=$(losetup -r -f --show "$work/qsd.raw")
      ;;
    raw) loop=$(losetup -r -f --show "$work/img.raw") ;;
  esac
  mount -o ro,noload "$loop" "$work/fs"
}
detach() {
  umount "$work/fs"
  losetup -d "$loop"
  loop=""
  if is_mounted "$work/mnt"; then
    local pid
    pid=$(pgrep -n -f "^$VDISKFS .*$work/mnt" || true)
    fusermount3 -u "$work/mnt"
    [ -z "$pid" ] || for _ in $(seq 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
  fi
  if [ -n "$qsd_pid" ]; then
    kill -TERM "$qsd_pid"
    wait "$qsd_pid" 2>/dev/null || true
    qsd_pid=""
  fi
}
tar_seconds() {
  local t0 bytes
  t0=$(date +%s%N)
  bytes=$(tar -cf - -C "$work/fs" tree | wc -c)
  [ "$bytes" -gt "$tree_bytes" ] || { echo "tar read only $bytes of $tree_bytes bytes" >&2; exit 1; }
  awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.3f\n", ns / 1e9 }'
}
fio_iops() {
  fio --name=r --filename="$work/fs/rand.bin" --readonly --rw=randread --bs=4k --direct=1 \
    --ioengine=psync --numjobs=1 --time_based --runtime="$FIO_TIME" --randrepeat=0 \
    --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{ print $8 }'
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
make_image
ways=${WAYS:-vdiskfs qsd raw}
tar_vdiskfs=() tar_qsd=() tar_raw=() fio_vdiskfs=() fio_qsd=() fio_raw=()
for run in $(seq "$RUNS"); do
  for way in $ways; do # interleaved: vdiskfs qsd raw vdiskfs ...
    log "run $run: $way"
    drop
    prefault
    attach "$way"
    result=$(tar_seconds) || exit 1
    eval "tar_$way+=($result)"
    detach
    drop
    prefault
    attach "$way"
    eval "fio_$way+=($(fio_iops))"
    detach
  done
done
tar_med_vdiskfs=- tar_med_qsd=- tar_med_raw=- fio_med_vdiskfs=- fio_med_qsd=- fio_med_raw=-
for way in $ways; do
  eval "tar_med_$way=\$(printf '%s\n' \"\${tar_$way[@]}\" | median)"
  eval "fio_med_$way=\$(printf '%s\n' \"\${fio_$way[@]}\" | median)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mkdir -p "$here/results"
{
  echo "# vdiskfs real workload: $stamp"
  echo
  echo "ext4 in a ${SIZE_MB} MiB qcow2 ($FILES files, $tree_mb MiB, and a $RAND_MB MiB file), through a read-only loop device."
  echo "vdiskfs $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)${MOUNT_OPTIONS:+ -o $MOUNT_OPTIONS}, $(qemu-storage-daemon --version | head -1), $(nproc) cores, medians of $RUNS runs, page cache dropped before each.${NOTE:+ $NOTE}"
  echo
  echo "| workload | vdiskfs | qsd | raw loop | vs qsd | vs raw | floor |"
  echo "|---|---|---|---|---|---|---|"
  echo "| tar of the tree (s; ratio = time of the other / vdiskfs) | $tar_med_vdiskfs | $tar_med_qsd | $tar_med_raw | $(ratio "$tar_med_qsd" "$tar_med_vdiskfs") | $(ratio "$tar_med_raw" "$tar_med_vdiskfs") | >= 0.95 vs raw |"
  echo "| 4 KiB random reads in a file (IOPS) | $fio_med_vdiskfs | $fio_med_qsd | $fio_med_raw | $(ratio "$fio_med_vdiskfs" "$fio_med_qsd") | $(ratio "$fio_med_vdiskfs" "$fio_med_raw") | >= 2 vs qsd, >= 1.0 vs raw |"
  echo
  echo "Runs: tar vdiskfs ${tar_vdiskfs[*]}; qsd ${tar_qsd[*]}; raw ${tar_raw[*]}. fio vdiskfs ${fio_vdiskfs[*]}; qsd ${fio_qsd[*]}; raw ${fio_raw[*]}."
} | tee "$here/results/$stamp-workload.md"
log "results: $here/results/$stamp-workload.md"
