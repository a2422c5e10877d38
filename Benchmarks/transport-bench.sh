#!/usr/bin/env bash
# vdiskfs transport benchmark (issue 19): the same mount served through the classic /dev/fuse
# loop, through FUSE-over-io_uring, and (where the image qualifies) through FUSE passthrough,
# against the raw file in the page cache.
#
#   Benchmarks/transport-bench.sh /path/to/vdiskfs      (root; `make bench` runs it after bench.sh)
#
# Environment: SIZE_MB (2048), RUNS (5), FIO_TIME (5 s), QUICK=1 (512 MiB, 2 runs, 3 s), NOTE.
#
# Images: a qcow2 and a dynamic vhdx (1 MiB blocks) made by qemu-img from one raw file of
# incompressible data with a quarter left as holes, and for passthrough the raw file itself
# (`-o format=raw`, read-write) and a monolithicFlat VMDK (read-only; vdiskfs passes its extent
# through only read-only). Every image and the raw file sit in the page cache; every run is a
# fresh mount (so disk.raw's own page cache starts empty) and is checked against
# `qemu-img convert -O raw` first. Rounds interleave the transports (classic, io_uring, ...).
# Workloads on disk.raw:
#   qd1   fio 4 KiB random reads, psync, 1 job (IOPS)
#   qd1cpu0  the same with the reader confined to CPU 0 (so the scheduler cannot move it between
#         the CPUs' queues: what the transport gives a reader that stays put)
#   qd1busy  the free reader again while one busy loop per CPU runs (a machine with no idle CPU:
#         the scheduler has nowhere to move the reader to when its reply wakes it)
#   j4    the same with 4 jobs (IOPS)
#   dd    dd bs=1M of the whole disk.raw (MB/s; the mount's first read)
# The raw file is read the same way with its page cache kept (fio --invalidate=0).
# Modes: the default read-write mount for both formats, and -o ro for qcow2.
# Floors (issue 19, same run): io_uring qd1 >= 2x classic, j4 >= 1.5x classic, dd >= 1.0x classic;
# passthrough >= 0.8x the raw file. The fraction of the raw file io_uring reaches at qd1 is the
# number to drive toward 1.
# enable_uring (/sys/module/fuse/parameters/enable_uring) is switched on for the run and restored.
# Results: Benchmarks/results/<timestamp>-transport.md (and on stdout).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
VDISKFS=$(realpath "${1:?usage: transport-bench.sh VDISKFS_BINARY}")
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MB=${SIZE_MB:-512} RUNS=${RUNS:-2} FIO_TIME=${FIO_TIME:-3}
else
  SIZE_MB=${SIZE_MB:-2048} RUNS=${RUNS:-5} FIO_TIME=${FIO_TIME:-5}
fi
[ "$(id -u)" = 0 ] || { echo "transport-bench.sh needs root (FUSE mounts, enable_uring)" >&2; exit 1; }
param=/sys/module/fuse/parameters/enable_uring
[ -w "$param" ] || { echo "transport-bench.sh: $param is missing: this kernel has no FUSE-over-io_uring" >&2; exit 1; }

work=$(mktemp -d /var/tmp/vdiskfs-transport-bench.XXXXXX)
mkdir -p "$work/mnt"
previous=$(cat "$param")
hogs=()
start_hogs() { # one busy loop per CPU
  for _ in $(seq "$(nproc)"); do
    sh -c 'while :; do :; done' &
    hogs+=($!)
  done
}
stop_hogs() {
  [ ${#hogs[@]} -gt 0 ] || return 0
  kill "${hogs[@]}" 2>/dev/null || true
  wait "${hogs[@]}" 2>/dev/null || true # killed: 143
  hogs=()
}
cleanup() {
  [ "$BASHPID" = "$$" ] || return 0
  set +e
  stop_hogs
  is_mounted "$work/mnt" && fusermount3 -u "$work/mnt"
  pkill -f "^$VDISKFS .*$work/mnt" 2>/dev/null
  echo "$previous" >"$param"
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
echo Y >"$param"


make_images() {
  log "making ${SIZE_MB} MiB images"
  python3 - "$work/img.raw" "$SIZE_MB" <<'EOF'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for i in range(mib):
        # every fourth MiB a hole: images keep unallocated ranges, as real disks do
        f.write(b"\0" * (1 << 20) if i % 4 == 3 else os.urandom(1 << 20))
EOF
  qemu-img convert -f raw -O qcow2 "$work/img.raw" "$work/img.qcow2"
  qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$work/img.raw" "$work/img.vhdx"
  qemu-img convert -f raw -O vmdk -o subformat=monolithicFlat "$work/img.raw" "$work/img.vmdk"
  cp "$work/img.raw" "$work/pt.raw"
  cat "$work"/img.* "$work/pt.raw" >/dev/null
}

# mount IMAGE OPTIONS: a fresh vdiskfs mount on $work/mnt, checked against the oracle.
mount_vdiskfs() {
  "$VDISKFS" "$1" "$work/mnt" -o "$2"
  wait_readable "$work/mnt/disk.raw"
}
unmount_vdiskfs() {
  fusermount3 -u "$work/mnt"
  for _ in $(seq 1 500); do pgrep -f "^$VDISKFS .*$work/mnt" >/dev/null || return 0; sleep 0.02; done
}
fio_iops() { # file jobs [extra]
  fio --name=t --filename="$1" --rw=randread --bs=4k --size="$((SIZE_MB / 2))M" --numjobs="$2" \
    --group_reporting --time_based --runtime="$FIO_TIME" --ioengine=psync ${3:-} --output-format=terse 2>/dev/null |
    awk -F';' '{print $8}'
}
dd_rate() { # MB/s from bytes and time
  local start end
  start=$(date +%s%N)
  dd if="$1" of=/dev/null bs=1M status=none
  end=$(date +%s%N)
  echo $((SIZE_MB * 1048576 * 1000 / (end - start)))
}

tsv="$work/results.tsv"
: >"$tsv"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$tsv"; } # image mode way workload value

# one IMAGE MODE WAY OPTIONS: one fresh mount, checked, then dd, qd1, j4.
one() {
  local image=$1 mode=$2 way=$3 options=$4
  mount_vdiskfs "$work/$image" "$options"
  if ! cmp -s "$work/mnt/disk.raw" "$work/img.raw"; then
    echo "MISMATCH: $image $mode $way shows other bytes than qemu-img convert" >&2
    unmount_vdiskfs
    exit 1
  fi
  unmount_vdiskfs
  mount_vdiskfs "$work/$image" "$options"
  record "$image" "$mode" "$way" dd "$(dd_rate "$work/mnt/disk.raw")"
  # Passed through, disk.raw's pages are the host file's: keep them, as for the raw file.
  local keep=""
  [ "$way" = passthrough ] && keep=--invalidate=0
  record "$image" "$mode" "$way" qd1 "$(fio_iops "$work/mnt/disk.raw" 1 "$keep")"
  record "$image" "$mode" "$way" qd1cpu0 "$(fio_iops "$work/mnt/disk.raw" 1 "$keep --cpus_allowed=0")"
  record "$image" "$mode" "$way" j4 "$(fio_iops "$work/mnt/disk.raw" 4 "$keep")"
  if [ "$way" = classic ] || [ "$way" = io_uring ]; then
    local busy
    start_hogs
    busy=$(fio_iops "$work/mnt/disk.raw" 1 "$keep")
    stop_hogs
    record "$image" "$mode" "$way" qd1busy "$busy"
  fi
  unmount_vdiskfs
}
raw_file() {
  record img.raw - raw dd "$(dd_rate "$work/img.raw")"
  record img.raw - raw qd1 "$(fio_iops "$work/img.raw" 1 --invalidate=0)"
  record img.raw - raw qd1cpu0 "$(fio_iops "$work/img.raw" 1 "--invalidate=0 --cpus_allowed=0")"
  record img.raw - raw j4 "$(fio_iops "$work/img.raw" 4 --invalidate=0)"
  local busy
  start_hogs
  busy=$(fio_iops "$work/img.raw" 1 --invalidate=0)
  stop_hogs
  record img.raw - raw qd1busy "$busy"
}

make_images
for run in $(seq 1 "$RUNS"); do
  log "round $run of $RUNS"
  raw_file
  for image in img.qcow2 img.vhdx; do
    one "$image" rw classic "rw,io_uring=off"
    one "$image" rw io_uring "rw,io_uring=on"
  done
  one img.qcow2 ro classic "ro,io_uring=off"
  one img.qcow2 ro io_uring "ro,io_uring=on"
  one pt.raw rw passthrough "rw,format=raw,io_uring=off"
  one pt.raw rw no-passthrough "rw,format=raw,passthrough=off,io_uring=off"
  one img.vmdk ro passthrough "ro,io_uring=off"
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$here/results/$stamp-transport.md"
mkdir -p "$here/results"
python3 - "$tsv" "$out" "$SIZE_MB" "$RUNS" "$FIO_TIME" "$(uname -r)" "$("$VDISKFS" --version 2>/dev/null | head -1)" "${NOTE:-}" <<'EOF'
import collections, statistics, sys
tsv, out, size, runs, fio_time, kernel, version, note = sys.argv[1:9]
values = collections.defaultdict(list)
for line in open(tsv):
    image, mode, way, workload, value = line.rstrip("\n").split("\t")
    if value:
        values[(image, mode, way, workload)].append(float(value))
def med(key):
    v = values.get(key)
    return statistics.median(v) if v else None
def fmt(x):
    return "-" if x is None else f"{x:,.0f}"
def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"
lines = [f"# Transport benchmark ({size} MiB, medians of {runs}, fio {fio_time} s)", "",
         f"kernel {kernel}; {version}" + (f"; {note}" if note else ""), "",
         "| image | mount | workload | classic | io_uring | raw file (page cache) | io_uring / classic | floor | io_uring / raw |",
         "|---|---|---|---|---|---|---|---|---|"]
floors = {"qd1": 2.0, "qd1cpu0": 2.0, "qd1busy": 2.0, "j4": 1.5, "dd": 1.0}
units = {"qd1": "4K rand QD1 IOPS", "qd1cpu0": "4K rand QD1 IOPS, reader on CPU 0",
         "qd1busy": "4K rand QD1 IOPS, every CPU busy", "j4": "4K rand 4 jobs IOPS", "dd": "dd bs=1M MB/s"}
verdicts = []
for image, mode in [("img.qcow2", "rw"), ("img.vhdx", "rw"), ("img.qcow2", "ro")]:
    for w in ["qd1", "qd1cpu0", "qd1busy", "j4", "dd"]:
        c, u, r = med((image, mode, "classic", w)), med((image, mode, "io_uring", w)), med(("img.raw", "-", "raw", w))
        ok = c is not None and u is not None and u / c >= floors[w]
        verdicts.append(ok)
        lines.append(f"| {image[4:]} | {mode} | {units[w]} | {fmt(c)} | {fmt(u)} | {fmt(r)} | {ratio(u, c)} | >= {floors[w]} {'ok' if ok else 'MISSED'} | {ratio(u, r)} |")
lines += ["", "| image | mount | workload | passthrough | without | raw file (page cache) | passthrough / raw | floor |", "|---|---|---|---|---|---|---|---|"]
for image, mode, without in [("pt.raw", "rw", "no-passthrough"), ("img.vmdk", "ro", None)]:
    for w in ["qd1", "qd1cpu0", "j4", "dd"]:
        p, r = med((image, mode, "passthrough", w)), med(("img.raw", "-", "raw", w))
        n = med((image, mode, without, w)) if without else None
        ok = p is not None and r is not None and p / r >= 0.8
        verdicts.append(ok)
        name = "raw" if image == "pt.raw" else "vmdk monolithicFlat"
        lines.append(f"| {name} | {mode} | {units[w]} | {fmt(p)} | {fmt(n)} | {fmt(r)} | {ratio(p, r)} | >= 0.8 {'ok' if ok else 'MISSED'} |")
lines += ["", "Every run's values (tsv: image, mount, way, workload, value):", "", "```"] + [l.rstrip() for l in open(tsv)] + ["```"]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print("floors:", "all met" if all(verdicts) else f"{verdicts.count(False)} missed")
EOF
log "results: $out"
