#!/usr/bin/env bash
# vdiskfs benchmark (issue 6): vdiskfs vs qemu-storage-daemon's FUSE export vs the libyal mount
# tool that reads the format (qcowmount / vmdkmount / vhdimount), vs the raw file itself.
#
#   Benchmarks/bench.sh /path/to/vdiskfs        (root; `make bench` builds and passes the release binary)
#
# Environment: SIZE_MB (2048), RUNS (5), FIO_TIME (10 s), QUICK=1 (256 MiB, 2 runs, 4 s),
# FORMATS (qcow2 qcow2c chain vmdk vhdx vpc vdi), READS=0 to skip the reads, WRITES=0 to skip the
# writes, WRITE_FORMATS (qcow2 vmdk vhdx vpc vdi: those of FORMATS whose writes are measured),
# WRITE_WORKLOADS (alloc_rand_1j alloc_rand_4j empty_rand_1j empty_rand_4j empty_seq),
# MICRO=0 to skip the Swift micro benchmarks and the callgrind count, RSS=0 to skip the 64 GiB
# random-write RSS run (RSS_TIME, 30 s), RO_FORMATS (qcow2 qcow2c chain: where the default mount is
# read-write, also measured with -o ro), NOTE (free text put into the results).
#
# vdiskfs is measured as users mount it (`vdiskfs IMAGE MNT`: read-write where the format can be
# written) and, on RO_FORMATS, also with `-o ro` (tool `vdiskfs-ro`).
#
# Beside them on the random reads: FUSECeiling (Benchmarks/Sources/FUSECeiling), a minimal libfuse
# server that preads the raw file with vdiskfs's transport settings: no format, no caches. What it
# reaches is what the FUSE transport alone allows with those settings; it is not a peer.
#
# Every image is made from one deterministic raw (AES-CTR keystream + a pattern per 64 KiB
# block: ~50 % compressible, no zero block). Every tool's view is compared with
# `qemu-img convert -O raw` before it is measured; a libyal tool whose bytes differ is reported as
# incorrect and left out of the peer. Runs are interleaved (A B C A B C ...), each on a fresh mount.
#
# Before every timed first sequential read (before mounting; after the drop_caches of the cold
# orders) and every write run, the script touches 2 x SIZE_MB + 512 MiB of anonymous memory and frees it (PREFAULT=0 to
# skip). On a VM whose balloon reports free pages to the host (this
# one: virtio_balloon with free page reporting), a page-cache page allocated from reported memory
# faults in the host first; without the step a first read through any FUSE mount here came out at
# 0.4 or at 3 GB/s depending only on which free pages the kernel handed out.
# Results: Benchmarks/results/<timestamp>.{md,json} (and the table on stdout).
set -euo pipefail
export PATH=/opt/swift/usr/bin:$PATH:/usr/sbin:/sbin
VDISKFS=$(realpath "${1:?usage: bench.sh VDISKFS_BINARY}")
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MB=${SIZE_MB:-256} RUNS=${RUNS:-2} FIO_TIME=${FIO_TIME:-4} RSS_TIME=${RSS_TIME:-8}
else
  SIZE_MB=${SIZE_MB:-2048} RUNS=${RUNS:-5} FIO_TIME=${FIO_TIME:-10}
fi
FORMATS=${FORMATS:-qcow2 qcow2c chain vmdk vhdx vpc vdi}
READS=${READS:-1}
WRITES=${WRITES:-1}
WRITE_FORMATS=${WRITE_FORMATS:-qcow2 vmdk vhdx vpc vdi}
WRITE_WORKLOADS=${WRITE_WORKLOADS:-alloc_rand_1j alloc_rand_4j empty_rand_1j empty_rand_4j empty_seq}
MICRO=${MICRO:-1}
RSS=${RSS:-1}
RSS_TIME=${RSS_TIME:-30}
RO_FORMATS=${RO_FORMATS:-qcow2 qcow2c chain}
PREFAULT=${PREFAULT:-1}
[ "$(id -u)" = 0 ] || { echo "bench.sh needs root (FUSE mounts, drop_caches)" >&2; exit 1; }

# Peers and tools, installed when missing.
need=()
for p in fio:fio qemu-img:qemu-utils qemu-storage-daemon:qemu-system-common qcowmount:libqcow-utils \
  vmdkmount:libvmdk-utils vhdimount:libvhdi-utils valgrind:valgrind openssl:openssl fusermount3:fuse3; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d /var/tmp/vdiskfs-bench.XXXXXX)
mkdir -p "$work/mv" "$work/my" "$work/mc"
touch "$work/qsd.raw"
qsd_pid=""
stop_all() {
  set +e
  [ -n "$qsd_pid" ] && kill -TERM "$qsd_pid" 2>/dev/null && wait "$qsd_pid" 2>/dev/null
  qsd_pid=""
  for m in "$work/mv" "$work/my" "$work/mc" "$work/qsd.raw"; do mountpoint -q "$m" && fusermount3 -u "$m"; done
  for _ in $(seq 1 100); do pgrep -f "$work/" >/dev/null || break; sleep 0.05; done
  pkill_left=$(pgrep -f "$work/")
  [ -n "$pkill_left" ] && kill -TERM $pkill_left 2>/dev/null
}
cleanup() {
  set +e
  stop_all
  for m in "$work/mv" "$work/my" "$work/mc" "$work/qsd.raw"; do mountpoint -q "$m" && umount -l "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$here/results"
mkdir -p "$results"
tsv="$work/samples.tsv" # workload image tool run value unit rss_kib
: >"$tsv"
meta="$work/meta.tsv" # key value
: >"$meta"

# ---------------------------------------------------------------- images
make_images() {
  log "making a ${SIZE_MB} MiB deterministic raw and the images"
  # openssl dies of SIGPIPE when the generator has enough: only the generator's status counts.
  (set +o pipefail
    openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 -nosalt \
      </dev/zero 2>/dev/null | python3 "$here/gen-data.py" "$SIZE_MB" >"$work/disk.raw")
  local f
  for f in $FORMATS; do
    case $f in
      qcow2) qemu-img convert -f raw -O qcow2 -o cluster_size=65536 "$work/disk.raw" "$work/img.qcow2" ;;
      qcow2c) qemu-img convert -c -f raw -O qcow2 -o cluster_size=65536 "$work/disk.raw" "$work/img.qcow2c" ;;
      chain)
        qemu-img convert -f raw -O qcow2 -o cluster_size=65536 "$work/disk.raw" "$work/chain-base.qcow2"
        qemu-img create -q -f qcow2 -o cluster_size=65536 -b chain-base.qcow2 -F qcow2 "$work/img.chain"
        # A quarter of the clusters (every fourth) rewritten in the top layer.
        awk -v n=$((SIZE_MB * 16)) 'BEGIN { for (i = 1; i < n; i += 4) printf "write -q -P %d %d 64k\n", 1 + i % 251, i * 65536 }' |
          qemu-io -f qcow2 "$work/img.chain" >/dev/null
        ;;
      vmdk) qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$work/disk.raw" "$work/img.vmdk" ;;
      vhdx) qemu-img convert -f raw -O vhdx -o subformat=dynamic "$work/disk.raw" "$work/img.vhdx" ;;
      vpc) qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$work/disk.raw" "$work/img.vpc" ;;
      vdi) qemu-img convert -f raw -O vdi "$work/disk.raw" "$work/img.vdi" ;;
    esac
  done
}
qemu_driver() { case $1 in qcow2 | qcow2c | chain) echo qcow2 ;; *) echo "$1" ;; esac; }
libyal_tool() {
  case $1 in qcow2 | qcow2c | chain) echo qcowmount ;; vmdk) echo vmdkmount ;; vhdx | vpc) echo vhdimount ;; *) echo "" ;; esac
}
image_path() { echo "$work/img.$1"; }
warm() { # page-cache the image files (and the chain's base)
  cat "$1" >/dev/null
  case $1 in *.chain) cat "$work/chain-base.qcow2" >/dev/null ;; esac
}

# ---------------------------------------------------------------- servers
# mount_tool TOOL IMAGE FORMAT [rw] → sets target, srv_pid, mount_ms (rw: for qsd; vdiskfs is
# always mounted by default, read-write)
target="" srv_pid="" mount_ms=0
mount_tool() {
  local tool=$1 image=$2 format=$3 rw=${4:-} t0
  t0=$(now_ns)
  case $tool in
    vdiskfs | vdiskfs-ro) # the default mount (read-write where the format can be written) / -o ro
      if [ "$tool" = vdiskfs ]; then "$VDISKFS" "$image" "$work/mv" ${VDISKFS_ARGS:-}; else "$VDISKFS" "$image" "$work/mv" -o ro; fi
      target="$work/mv/disk.raw"
      wait_readable "$target"
      srv_pid=$(pgrep -n -f "^$VDISKFS $image") ;;
    qsd)
      local ro=on; [ "$rw" = rw ] && ro=off
      qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$image,cache.direct=off,read-only=$ro" \
        --blockdev "driver=$(qemu_driver "$format"),node-name=q,file=f,read-only=$ro" \
        --export "type=fuse,id=e,node-name=q,mountpoint=$work/qsd.raw,writable=$([ "$rw" = rw ] && echo on || echo off)" \
        >/dev/null 2>&1 &
      qsd_pid=$! srv_pid=$!
      target="$work/qsd.raw"
      wait_readable "$target" ;;
    qcowmount | vmdkmount | vhdimount)
      "$tool" -X allow_other "$image" "$work/my" >/dev/null 2>&1 || "$tool" "$image" "$work/my" >/dev/null
      case $tool in qcowmount) target="$work/my/qcow1" ;; vmdkmount) target="$work/my/vmdk1" ;; vhdimount) target="$work/my/vhdi1" ;; esac
      wait_readable "$target"
      srv_pid=$(pgrep -n -f "^$tool .*$work/my") ;;
    ceiling)
      "$CEILING" "$work/disk.raw" "$work/mc" >/dev/null 2>&1 &
      srv_pid=$!
      target="$work/mc/disk.raw"
      wait_readable "$target" ;;
    raw)
      target="$work/disk.raw"; srv_pid="" ;;
  esac
  mount_ms=$(( ($(now_ns) - t0) / 1000000 ))
}
rss_kib() { # peak RSS (VmHWM) of the server, sampled before it stops
  [ -n "$srv_pid" ] && awk '/^VmHWM/ { print $2 }' "/proc/$srv_pid/status" 2>/dev/null || echo 0
}
umount_tool() {
  local tool=$1
  case $tool in
    qsd) kill -TERM "$qsd_pid"; wait "$qsd_pid" 2>/dev/null || true; qsd_pid="" ;; # SIGTERM, not fusermount3
    vdiskfs | vdiskfs-ro) fusermount3 -u "$work/mv" ;;
    ceiling) fusermount3 -u "$work/mc"; wait "$srv_pid" 2>/dev/null || true ;;
    raw) ;;
    *) fusermount3 -u "$work/my" ;;
  esac
  if [ -n "$srv_pid" ]; then
    local i
    for i in $(seq 1 400); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.025; done
  fi
}
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$tsv"; }

# ---------------------------------------------------------------- workloads
prefault() { # see the header: make the next page-cache allocations land on host-backed pages
  [ "$PREFAULT" = 1 ] || return 0
  python3 -c "bytearray(($SIZE_MB * 2 + 512) << 20)"
}
dd_mbps() {
  dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/copied/ { for (i=1;i<=NF;i++) if ($i=="s,") printf "%.0f\n", $1/$(i-1)/1e6 }'
}
fio_read_iops() { # $1 file, $2 jobs
  fio --name=r --filename="$1" --rw=randread --bs=4k --direct=1 --ioengine=psync --numjobs="$2" \
    --group_reporting --time_based --runtime="$FIO_TIME" --size="${SIZE_MB}M" --randrepeat=0 \
    --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{ print $8 }'
}
fio_write() { # $1 file, $2 rand|seq, $3 jobs → IOPS or MB/s
  if [ "$2" = seq ]; then
    fio --name=w --filename="$1" --rw=write --bs=1M --size="${SIZE_MB}M" --direct=1 --ioengine=psync \
      --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{ printf "%.0f\n", $48 * 1024 / 1e6 }'
  else
    fio --name=w --filename="$1" --rw=randwrite --bs=4k --direct=1 --ioengine=psync --numjobs="$3" \
      --group_reporting --time_based --runtime="$FIO_TIME" --size="${SIZE_MB}M" --randrepeat=0 \
      --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{ print $49 }'
  fi
}

verify() { # tool image format → 0 when the tool shows exactly `qemu-img convert -O raw`
  local tool=$1 image=$2 format=$3 ok=0
  mount_tool "$tool" "$image" "$format" || { umount_tool "$tool"; return 1; }
  cmp -s "$target" "$work/ref.raw" || ok=1
  if [ $ok = 0 ] && [ "$(stat -c %s "$target")" != "$(stat -c %s "$work/ref.raw")" ]; then ok=1; fi
  umount_tool "$tool"
  return $ok
}

read_benchmarks() { # format
  local f=$1 image yal tools=() t run v ro=""
  image=$(image_path "$f")
  yal=$(libyal_tool "$f")
  case " $RO_FORMATS " in *" $f "*) ro=vdiskfs-ro ;; esac
  log "$f: verifying the views against qemu-img convert"
  qemu-img convert -O raw "$image" "$work/ref.raw"
  for t in vdiskfs $ro qsd $yal; do
    if verify "$t" "$image" "$f"; then
      tools+=("$t"); printf '%s\t%s\tcorrect\n' "$f" "$t" >>"$work/correct.tsv"
    else
      log "$f: $t shows different bytes than qemu-img convert: incorrect, not measured"
      printf '%s\t%s\tincorrect\n' "$f" "$t" >>"$work/correct.tsv"
    fi
  done
  rm -f "$work/ref.raw"
  tools+=(raw)
  # warm: host cache warm, then a re-read on the same mount (the mount's own page cache);
  # cold: caches dropped before mounting; cold_mounted: dropped after mounting, before reading.
  for cache in warm cold cold_mounted; do
    log "$f: dd bs=1M, host cache $cache"
    for run in $(seq 1 "$RUNS"); do
      for t in "${tools[@]}"; do
        case $cache in
          warm) warm "$image"; [ "$t" = raw ] && warm "$work/disk.raw"; prefault ;;
          cold) drop; prefault ;;
        esac
        mount_tool "$t" "$image" "$f"
        [ "$cache" = warm ] && [ "$t" != raw ] && record mount_ms "$f" "$t" "$run" "$mount_ms" ms 0
        [ "$cache" = cold_mounted ] && { drop; prefault; }
        v=$(dd_mbps "$target")
        record "seq_read_$cache" "$f" "$t" "$run" "$v" MB/s "$(rss_kib)"
        if [ "$cache" = warm ]; then
          v=$(dd_mbps "$target")
          record seq_reread_warm "$f" "$t" "$run" "$v" MB/s "$(rss_kib)"
        fi
        umount_tool "$t"
      done
    done
  done
  # Not beside compressed data: the ceiling preads the raw file, so the ratio would say nothing.
  [ -n "$CEILING" ] && [ "$f" != qcow2c ] && tools+=(ceiling)
  for jobs in 1 4; do
    log "$f: fio 4 KiB random read, $jobs job(s), ${FIO_TIME}s"
    for run in $(seq 1 "$RUNS"); do
      for t in "${tools[@]}"; do
        warm "$image"
        [ "$t" = ceiling ] && warm "$work/disk.raw" # it preads the raw file through the page cache
        mount_tool "$t" "$image" "$f"
        v=$(fio_read_iops "$target" "$jobs")
        record "rand_read_${jobs}j" "$f" "$t" "$run" "$v" IOPS "$(rss_kib)"
        umount_tool "$t"
      done
    done
  done
}

write_check() { # image format → "clean" when QEMU finds nothing wrong (vpc: qemu-img check does not support it; it must convert)
  if [ "$2" = vpc ]; then # (into a file: qemu-img will not write to /dev/null)
    qemu-img convert -f vpc -O raw "$1" "$work/check.raw" >"$work/check.log" 2>&1 && rm -f "$work/check.raw"
  else
    qemu-img check -q -f "$(qemu_driver "$2")" "$1" >"$work/check.log" 2>&1
  fi && echo clean || echo FAILED
}
write_benchmarks() { # format: vdiskfs vs qsd vs a raw file; the image judged by QEMU after each run
  local f=$1 w t run v img check rss
  for w in $WRITE_WORKLOADS; do
    log "$f write: $w"
    for run in $(seq 1 "$RUNS"); do
      for t in vdiskfs qsd raw; do
        if [ "$t" = raw ]; then
          img="$work/w.raw"
          case $w in alloc*) cp "$work/disk.raw" "$img" ;; *) rm -f "$img"; truncate -s "${SIZE_MB}M" "$img" ;; esac
        else
          img="$work/w.$f"
          case $w in
            alloc*) cp "$(image_path "$f")" "$img" ;;
            *) rm -f "$img"; qemu-img create -q -f "$f" "$img" "${SIZE_MB}M" ;;
          esac
        fi
        prefault # the writes of a buffered server fill the host page cache
        if [ "$t" = raw ]; then target=$img srv_pid=""; else mount_tool "$t" "$img" "$f" rw; fi
        case $w in
          *_rand_1j) v=$(fio_write "$target" rand 1) ;;
          *_rand_4j) v=$(fio_write "$target" rand 4) ;;
          empty_seq) v=$(fio_write "$target" seq 1) ;;
        esac
        rss=$(rss_kib)
        [ "$t" != raw ] && umount_tool "$t"
        check=clean
        if [ "$t" != raw ]; then
          check=$(write_check "$img" "$f")
          [ "$check" = clean ] || log "QEMU finds $img broken after $t $w: $(head -c 400 "$work/check.log")"
        fi
        record "write_$w" "$f" "$t" "$run" "$v" "$([ $w = empty_seq ] && echo MB/s || echo IOPS)" "$rss"
        printf '%s\t%s\t%s\t%s\t%s\n' "write_$w" "$t" "$run" "$check" "$f" >>"$work/checks.tsv"
        rm -f "$img"
      done
    done
  done
}

rss_benchmark() { # peak RSS of the default mount under 4-job 4 KiB random writes over a 64 GiB qcow2 (4 KiB clusters)
  local img="$work/rss.qcow2" v rss check=clean
  log "qcow2 write RSS: 64 GiB, 4 KiB clusters, --cache-size 16M, 4 jobs, ${RSS_TIME}s"
  rm -f "$img"; qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 64G
  VDISKFS_ARGS="--cache-size 16M"
  mount_tool vdiskfs "$img" qcow2
  VDISKFS_ARGS=""
  v=$(fio --name=w --filename="$target" --rw=randwrite --bs=4k --direct=1 --ioengine=psync --numjobs=4 \
    --group_reporting --time_based --runtime="$RSS_TIME" --size=64G --randrepeat=0 \
    --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{ print $49 }')
  rss=$(rss_kib)
  umount_tool vdiskfs
  if ! qemu-img check -q "$img" >"$work/check.log" 2>&1; then
    check=FAILED; log "qemu-img check FAILED after the RSS run: $(head -c 400 "$work/check.log")"
  fi
  record write_rss_64g qcow2 vdiskfs 1 "$v" IOPS "$rss"
  printf '%s\t%s\t%s\t%s\t%s\n' write_rss_64g vdiskfs 1 "$check" qcow2 >>"$work/checks.tsv"
  rm -f "$img"
}

micro_benchmarks() {
  local bin images
  log "micro benchmarks (Benchmarks/Package.swift, ordo-one/benchmark) and callgrind"
  (cd "$here" && swift build -c release >"$work/micro-build.log" 2>&1) || { log "micro build failed (see below)"; tail -20 "$work/micro-build.log" >&2; return 0; }
  bin=$(cd "$here" && swift build -c release --show-bin-path)
  mapfile -t images < <("$bin/HotPathCallgrind" --make "$work/hotpath")
  if (cd "$here" && HOTPATH_IMAGES="$work/hotpath" swift package --allow-writing-to-package-directory \
    benchmark --target HotPath --no-progress --format markdown >"$work/micro.md" 2>"$work/micro.err"); then
    # Only the tables (the tool prints its interposer warnings with colour codes before them).
    { echo "## Micro benchmarks (ordo-one/benchmark, Benchmarks/Package.swift)"; echo
      sed -n '/^## Baseline/,$p' "$work/micro.md" | sed 's/^## Baseline/Baseline/'; } >"$results/$stamp-micro.md"
  else
    log "ordo-one benchmark run failed: $(tail -5 "$work/micro.err")"
  fi
  # Valgrind 3.19 gives up on Swift 6.3's DWARF: count a copy without debug info.
  objcopy --strip-debug "$bin/HotPathCallgrind" "$work/HotPathCallgrind"
  SWIFT_DETERMINISTIC_HASHING=1 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$work/HotPathCallgrind" "${images[@]}" \
    >"$work/callgrind.stdout" 2>"$work/callgrind.err" || true
  awk '/Collected :/ { print "callgrind_instructions\t" $NF }' "$work/callgrind.err" >>"$meta"
  grep -m1 checksum "$work/callgrind.stdout" | awk '{ print "callgrind_checksum\t" $2 }' >>"$meta"
}

# ---------------------------------------------------------------- run
{
  printf 'timestamp\t%s\n' "$stamp"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'cpu\t%s\n' "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  printf 'mem_gib\t%s\n' "$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
  printf 'qemu\t%s\n' "$(qemu-storage-daemon --version | head -1)"
  printf 'libyal\tqcowmount %s, vmdkmount %s, vhdimount %s\n' "$(dpkg-query -W -f='${Version}' libqcow-utils)" \
    "$(dpkg-query -W -f='${Version}' libvmdk-utils)" "$(dpkg-query -W -f='${Version}' libvhdi-utils)"
  printf 'fio\t%s\n' "$(fio --version)"
  printf 'vdiskfs_commit\t%s\n' "$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf 'size_mb\t%s\nruns\t%s\nfio_time_s\t%s\nrss_time_s\t%s\n' "$SIZE_MB" "$RUNS" "$FIO_TIME" "$RSS_TIME"
  printf 'loadavg_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'prefault\t%s\n' "$PREFAULT"
  printf 'note\t%s\n' "${NOTE:-}"
} >>"$meta"
: >"$work/correct.tsv"; : >"$work/checks.tsv"
CEILING=""
if (cd "$here" && swift build -c release --product FUSECeiling >"$work/ceiling-build.log" 2>&1); then
  CEILING="$(cd "$here" && swift build -c release --show-bin-path)/FUSECeiling"
else
  log "FUSECeiling did not build (no transport ceiling measured): $(tail -3 "$work/ceiling-build.log")"
fi
make_images
[ "$READS" = 1 ] && for f in $FORMATS; do read_benchmarks "$f"; done
if [ "$WRITES" = 1 ]; then
  for f in $WRITE_FORMATS; do
    case " $FORMATS " in *" $f "*) write_benchmarks "$f" ;; esac
  done
fi
[ "$RSS" = 1 ] && rss_benchmark
[ "$MICRO" = 1 ] && micro_benchmarks
printf 'loadavg_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$meta"
python3 "$here/report.py" "$work" "$results/$stamp" "$VDISKFS"
[ -f "$results/$stamp-micro.md" ] && { echo; cat "$results/$stamp-micro.md"; } >>"$results/$stamp.md"
cat "$results/$stamp.md"
log "results: $results/$stamp.md and $results/$stamp.json"
