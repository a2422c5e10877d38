#!/usr/bin/env bash
# Sequential read of 1 GiB images (incompressible data, fully allocated) in several formats:
# `dd bs=1M` of vdiskfs's disk.raw vs qemu-storage-daemon's FUSE export vs the raw file, runs
# interleaved A B A B, each from a fresh mount (no FUSE page cache reused), host cache warm and
# cold. Prints medians in MB/s and the ratios. Needs root. FORMATS, RUNS and SIZE_MB override.
set -euo pipefail
VDISKFS=${1:-vdiskfs}
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-1024}
FORMATS=${FORMATS:-qcow2 vmdk vpc vhdx}
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
touch "$work/qsd.raw"

mbps() { # dd's bytes and seconds → MB/s
  dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/copied/ { for (i=1;i<=NF;i++) if ($i=="s,") print int($1/$(i-1)/1e6) }'
}
prepare() { # $1 cache mode, $2 file
  if [ "$1" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches; else cat "$2" > /dev/null; fi
}
run_vdiskfs() { # $1 cache, $2 image
  prepare "$1" "$2"
  "$VDISKFS" "$2" "$work/mnt" -o ro
  mbps "$work/mnt/disk.raw"
  fusermount3 -u "$work/mnt"
}
run_qsd() { # $1 cache, $2 image, $3 format
  prepare "$1" "$2"
  qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$2,cache.direct=off,read-only=on" \
    --blockdev "driver=$3,node-name=q,file=f,read-only=on" \
    --export "type=fuse,id=e,node-name=q,mountpoint=$work/qsd.raw" >/dev/null 2>&1 &
  qsd_pid=$!
  for _ in $(seq 1 100); do mountpoint -q "$work/qsd.raw" && break; sleep 0.05; done
  mbps "$work/qsd.raw"
  # SIGTERM, not fusermount3 -u (which leaves QEMU 7.2 spinning).
  kill -TERM "$qsd_pid"; wait "$qsd_pid" || true; qsd_pid=""
}
run_raw() { prepare "$1" "$work/disk.raw"; mbps "$work/disk.raw"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "| format | cache | vdiskfs MB/s | qemu-storage-daemon MB/s | raw file MB/s | vdiskfs / qsd | vdiskfs / raw |"
echo "|---|---|---|---|---|---|---|"
for format in $FORMATS; do
  image="$work/vm.$format"
  case $format in
    qcow2) qemu-img convert -O qcow2 -o cluster_size=65536 "$work/disk.raw" "$image" ;;
    vmdk) qemu-img convert -O vmdk -o subformat=monolithicSparse "$work/disk.raw" "$image" ;;
    vpc) qemu-img convert -O vpc -o subformat=dynamic "$work/disk.raw" "$image" ;;
    vhdx) qemu-img convert -O vhdx -o subformat=dynamic "$work/disk.raw" "$image" ;;
    vdi) qemu-img convert -O vdi "$work/disk.raw" "$image" ;;
  esac
  # Verify before measuring: both servers show the same bytes as the raw file.
  "$VDISKFS" "$image" "$work/mnt" -o ro
  cmp -n "$(stat -c %s "$work/disk.raw")" "$work/mnt/disk.raw" "$work/disk.raw"
  fusermount3 -u "$work/mnt"
  for cache in warm cold; do
    v=(); q=(); r=()
    for _ in $(seq 1 "$RUNS"); do
      v+=("$(run_vdiskfs $cache "$image")"); q+=("$(run_qsd $cache "$image" "$format")"); r+=("$(run_raw $cache)")
    done
    vm=$(printf '%s\n' "${v[@]}" | median); qm=$(printf '%s\n' "${q[@]}" | median); rm_=$(printf '%s\n' "${r[@]}" | median)
    printf '| %s | %s | %s (%s) | %s (%s) | %s | %s× | %s× |\n' "$format" "$cache" "$vm" "${v[*]}" "$qm" "${q[*]}" \
      "$rm_" "$(ratio "$vm" "$qm")" "$(ratio "$vm" "$rm_")"
  done
  rm -f "$image"
done
