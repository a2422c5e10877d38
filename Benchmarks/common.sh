# Helpers the benchmark scripts share; sourced (`. "$here/common.sh"`), not run.

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
now_ns() { date +%s%N; }
# Whether $1 is a mount point (a file too: qemu-storage-daemon exports onto one).
is_mounted() { awk -v p="$1" '$2 == p { found = 1 } END { exit !found }' /proc/mounts; }
# Drops the page cache (the host's copy of every image file included).
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# wait_readable FILE [SECONDS]: until FILE's first 4 KiB read whole (a fresh FUSE mount is
# ready), polling every 5 ms (bench.sh times mounts with it); up to SECONDS (10).
wait_readable() {
  local _
  for _ in $(seq 1 $((${2:-10} * 200))); do
    [ "$(head -c 4096 "$1" 2>/dev/null | wc -c)" = 4096 ] && return 0
    sleep 0.005
  done
  echo "mount did not become readable: $1" >&2
  return 1
}

# The median of the numbers on standard input, one per line.
median() {
  sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
