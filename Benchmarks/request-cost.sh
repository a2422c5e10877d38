#!/bin/bash
# Benchmarks/request-cost.sh SERVER IMAGE [READS]
#
# The user-space instructions one 4 KiB O_DIRECT random read costs a FUSE server: the server runs
# in the foreground under `valgrind --tool=callgrind`, fio makes READS reads with one job, and
# the count collected over exactly those reads is divided by READS. Kernel work is not counted,
# so this is the part of a request a server's own code decides, without the run-to-run noise of
# IOPS on a 2-CPU VM. SERVER is a vdiskfs binary (IMAGE any image it reads) or the FUSECeiling
# binary (IMAGE a raw file). Prints `instructions/read N`; with KEEP=DIR leaves the callgrind
# output there (`callgrind_annotate --tree=caller DIR/callgrind.out.1`).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 SERVER IMAGE [READS]" >&2; exit 2; }
server=$1 image=$2 reads=${3:-20000}
work=$(mktemp -d /tmp/request-cost.XXXXXX)
mkdir "$work/mnt"
pid=""
cleanup() {
  mountpoint -q "$work/mnt" && fusermount3 -u "$work/mnt"
  [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/callgrind.out* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# valgrind 3.19 cannot read the DWARF Swift 6.3 emits.
objcopy --strip-debug "$server" "$work/server"
file="$work/mnt/disk.raw"
case $(basename "$server") in
  FUSECeiling*) args=("$image" "$work/mnt") ;;
  *) args=("$image" "$work/mnt" -o ro -f) ;;
esac
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$work/server" "${args[@]}" \
  >"$work/valgrind.log" 2>&1 &
pid=$!
for _ in $(seq 300); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
mountpoint -q "$work/mnt" || { echo "the server did not mount:" >&2; tail -5 "$work/valgrind.log" >&2; exit 1; }
cat "$image" >/dev/null # the host page cache holds the image: no disk waits in the measurement
dd if="$file" of=/dev/null bs=4k count=2000 iflag=direct status=none # warm the server's caches
callgrind_control -z "$pid" >/dev/null 2>&1
fio --name=r --filename="$file" --rw=randread --bs=4k --direct=1 --ioengine=psync --numjobs=1 \
  --number_ios="$reads" --randseed=7 --output-format=terse --terse-version=3 >/dev/null 2>&1
callgrind_control -d "$pid" >/dev/null 2>&1
for _ in $(seq 50); do [ -s "$work/callgrind.out.1" ] && break; sleep 0.1; done
callgrind_annotate "$work/callgrind.out.1" 2>/dev/null |
  awk -v n="$reads" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "instructions/read %.0f\n", $1 / n }'
