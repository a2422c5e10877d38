#!/usr/bin/env bash
# vdiskfs remote-image benchmark (issue 18): images in S3 (radosgw), Ceph RBD and on an HTTP server
# (nginx), all on 127.0.0.1, started here and stopped in every path.
#
#   Benchmarks/remote-bench.sh /path/to/vdiskfs      (root; `make bench` runs it after bench.sh)
#
# Environment: SIZE_MB (2048), RUNS (3), FIO_TIME (10 s), QUICK=1 (256 MiB, 1 run, 4 s),
# PARTS (one seq rand: which of the three below to run).
#
# The image: a qcow2 holding an ext4 file system filled with deterministic data (Benchmarks/
# gen-data.py) and one 1 MiB file, `one.bin`. Uploaded to a bucket, served by nginx, and imported
# into RBD (qcow2 content in an RBD image, as Glance's stores hold them).
#
#   1. one file out of the image: mount from S3, loop-attach disk.raw, mount the ext4, read one.bin;
#      against what users do today: download the image (a SigV4 GET with curl), then the same
#      steps on the local file. Data cold (page cache dropped), tools warm. Target: at most 5 % of
#      the download-first time.
#   2. sequential dd of disk.raw (fresh mount; the stores hold the image in RAM: the OSD's memstore,
#      nginx's file in the page cache): vdiskfs from S3, HTTP and RBD, against qemu-storage-daemon
#      reading the same image through QEMU's curl driver (over nginx, and from radosgw as a
#      public-read object) and its rbd driver. Target: >= 1.5x. Buffered (`bs=1M`, what users
#      run) and direct (`iflag=direct`). QEMU 7.2's curl driver sometimes hangs on a buffered read
#      (see PEER_TIMEOUT); it hung in every attempt while other work ran on the machine.
#   3. 4 KiB random reads (fio, O_DIRECT, 1 job) with a warm block cache (remote_cache larger than
#      the image, one pass of dd first), against vdiskfs on the local file. Target: >= 0.8x.
#
# Results: Benchmarks/results/<timestamp>-remote.md (and on stdout).
set -euo pipefail

VDISKFS=$(realpath "${1:?usage: remote-bench.sh VDISKFS_BINARY}")
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
repo=$(cd "$here/.." && pwd)
if [ "${QUICK:-0}" = 1 ]; then
  SIZE_MB=${SIZE_MB:-256} RUNS=${RUNS:-1} FIO_TIME=${FIO_TIME:-4}
else
  SIZE_MB=${SIZE_MB:-2048} RUNS=${RUNS:-3} FIO_TIME=${FIO_TIME:-10}
fi
# A peer's sequential read that has not ended after PEER_TIMEOUT seconds counts as failed (QEMU
# 7.2's curl driver here stops making progress with parallel requests: its connections stay open
# and idle and the read never completes); a peer that failed once is not tried again in that mode.
PEER_TIMEOUT=${PEER_TIMEOUT:-$((SIZE_MB / 32 + 30))}
[ "$(id -u)" = 0 ] || { echo "remote-bench.sh needs root (FUSE mounts, loop devices)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/vdiskfs-remote-bench.XXXXXX)
mkdir -p "$work"/{mnt,fs,www,nginx,qsd}
chmod 755 "$work" "$work/www"  # nginx workers read the image as nobody
touch "$work/qsd/disk.raw"
loop="" qsd_pid="" nginx_pid=""


cleanup() {
  [ "$BASHPID" = "$$" ] || return 0 # not in a command substitution's subshell
  set +e
  is_mounted "$work/fs" && umount "$work/fs"
  [ -n "$loop" ] && losetup -d "$loop"
  is_mounted "$work/mnt" && fusermount3 -u "$work/mnt"
  [ -n "$qsd_pid" ] && qsd_stop
  # A daemon started in a measuring subshell that did not get to stop it.
  pkill -KILL -f "^qemu-storage-daemon .*$work/qsd" 2>/dev/null
  is_mounted "$work/qsd/disk.raw" && umount -l "$work/qsd/disk.raw"
  [ -n "$nginx_pid" ] && { kill -TERM "$nginx_pid"; wait "$nginx_pid" 2>/dev/null; }
  "$repo/scripts/ceph-cluster.sh" stop "$work/ceph" >/dev/null 2>&1
  pkill -f "^$VDISKFS .*$work/mnt" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# ---------------------------------------------------------------- servers
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_servers() {
  log "starting the Ceph cluster (monitor, memstore OSD, radosgw)"
  # The bucket and the RBD pool each hold the image, in the OSD's RAM.
  CEPH_MEMSTORE_MB=$((SIZE_MB * 3 + 1024)) "$repo/scripts/ceph-cluster.sh" start "$work/ceph" $$ >/dev/null
  eval "$("$repo/scripts/ceph-cluster.sh" env "$work/ceph" | sed 's/^/export /')"
  local port
  port=$(free_port)
  cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$port; root $work/www; }
}
EOF
  nginx -c "$work/nginx/nginx.conf" &
  nginx_pid=$!
  http_url="http://127.0.0.1:$port"
  for _ in $(seq 100); do curl -sf -o /dev/null "$http_url/" -r 0-0 2>/dev/null && break; curl -s -o /dev/null "$http_url/" && break; sleep 0.05; done
}
s3curl() { # curl with SigV4 for radosgw
  curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

# ---------------------------------------------------------------- the image
make_image() {
  log "making a ${SIZE_MB} MiB ext4 image with one 1 MiB file"
  truncate -s "${SIZE_MB}M" "$work/fs.raw"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/fs.raw"
  mount -o loop "$work/fs.raw" "$work/fs"
  local fill=$((SIZE_MB * 3 / 4))
  # openssl ends on SIGPIPE once the generator has what it needs: not a failure.
  (set +o pipefail; openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -nosalt \
    </dev/zero 2>/dev/null | python3 "$here/gen-data.py" "$fill" >"$work/fs/fill.bin")
  (set +o pipefail; head -c 1048576 "$work/fs/fill.bin" | tr '\0-\377' '\1-\377\0' >"$work/fs/one.bin")
  one_sum=$(md5sum <"$work/fs/one.bin" | cut -d' ' -f1)
  umount "$work/fs"
  qemu-img convert -f raw -O qcow2 "$work/fs.raw" "$work/www/img.qcow2"
  rm -f "$work/fs.raw"
  image_mb=$(( $(stat -c %s "$work/www/img.qcow2") >> 20 ))
  log "uploading to the bucket, importing into RBD"
  s3curl -X PUT "$AWS_ENDPOINT_URL/bench" -o /dev/null
  s3curl -T "$work/www/img.qcow2" "$AWS_ENDPOINT_URL/bench/img.qcow2" -o /dev/null
  # Readable without signing too, for QEMU's curl driver (it cannot sign S3 requests).
  s3curl -X PUT -H 'x-amz-acl: public-read' --data-binary '' "$AWS_ENDPOINT_URL/bench/img.qcow2?acl=" -o /dev/null
  rbd --conf "$CEPH_CONF" import --no-progress "$work/www/img.qcow2" rbd/img-qcow2 >/dev/null
}

# ---------------------------------------------------------------- workloads
mount_vdiskfs() { "$VDISKFS" "$1" "$work/mnt" -o ro${2:+,$2}; wait_readable "$work/mnt/disk.raw" 20; }
umount_vdiskfs() {
  local pid
  pid=$(pgrep -n -f "^$VDISKFS .*$work/mnt" || true)
  fusermount3 -u "$work/mnt"
  [ -z "$pid" ] || for _ in $(seq 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
}
read_one_file() { # disk.raw → the md5 of one.bin, through a loop device and the ext4
  loop=$(losetup -r -f --show "$work/mnt/disk.raw")
  mount -o ro,noload "$loop" "$work/fs"
  local sum
  sum=$(md5sum <"$work/fs/one.bin" | cut -d' ' -f1)
  umount "$work/fs"
  losetup -d "$loop"
  loop=""
  [ "$sum" = "$one_sum" ] || { echo "one.bin read wrong: $sum != $one_sum" >&2; exit 1; }
}
# MB/s of one sequential read, or "failed" (an error, or no end within DD_TIMEOUT seconds); more
# arguments go to dd (iflag=direct).
dd_mbps() {
  local out file=$1
  shift
  out=$(timeout "${DD_TIMEOUT:-600}" dd if="$file" of=/dev/null bs=1M "$@" 2>&1) || { echo failed; return 0; }
  awk '/copied/ { for (i=1;i<=NF;i++) if ($i=="s,") printf "%.0f\n", $1/$(i-1)/1e6 }' <<<"$out"
}
fio_iops() {
  fio --name=r --filename="$1" --rw=randread --bs=4k --direct=1 --ioengine=psync --numjobs=1 \
    --time_based --runtime="$FIO_TIME" --size="${SIZE_MB}M" --randrepeat=0 \
    --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{ print $8 }'
}
# The median of numbers on stdin; "failed (k of n)" when some runs failed.
median() {
  local values failed
  values=$(cat)
  failed=$(grep -c '^failed' <<<"$values" || true)
  if [ "$failed" -gt 0 ]; then echo "failed ($failed of $(wc -l <<<"$values"))"; return; fi
  sort -n <<<"$values" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }

# The data is cold on both sides (page cache dropped); the tools are warm (a binary loaded cold
# from disk after drop_caches costs 250-300 ms here, which a user's shell rarely pays).
warm_tools() { "$VDISKFS" --version >/dev/null; md5sum </dev/null >/dev/null; losetup --version >/dev/null; }
one_file() {
  local t0 ours=() download=()
  for _ in $(seq "$RUNS"); do
    drop
    warm_tools
    t0=$(now_ns)
    mount_vdiskfs "s3://bench/img.qcow2"
    read_one_file
    ours+=("$(ms_since "$t0")")
    umount_vdiskfs
    drop
    warm_tools
    t0=$(now_ns)
    s3curl "$AWS_ENDPOINT_URL/bench/img.qcow2" -o "$work/download.qcow2"
    mount_vdiskfs "$work/download.qcow2"
    read_one_file
    download+=("$(ms_since "$t0")")
    umount_vdiskfs
    rm -f "$work/download.qcow2"
  done
  one_ours=$(printf '%s\n' "${ours[@]}" | median)
  one_download=$(printf '%s\n' "${download[@]}" | median)
}

qsd_mount() { # blockdev options of the protocol node
  qemu-storage-daemon --blockdev "$1,node-name=p,read-only=on" \
    --blockdev "driver=qcow2,node-name=q,file=p,read-only=on" \
    --export "type=fuse,id=e,node-name=q,mountpoint=$work/qsd/disk.raw,writable=off" >/dev/null 2>&1 &
  qsd_pid=$!
  wait_readable "$work/qsd/disk.raw" 20
}
qsd_stop() { # SIGTERM; a daemon stuck in a request gets SIGKILL after 10 s, and its mount goes
  kill -TERM "$qsd_pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$qsd_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$qsd_pid" 2>/dev/null || true
  wait "$qsd_pid" 2>/dev/null || true
  is_mounted "$work/qsd/disk.raw" && umount -l "$work/qsd/disk.raw"
  qsd_pid=""
}

# The stores' copies in RAM (radosgw's and RBD's are, in the memstore OSD): the transports are
# measured, not this machine's disk.
warm_store() { cat "$work/www/img.qcow2" >/dev/null; }
sources="s3 http rbd qsd_http qsd_s3 qsd_rbd"
seq_run() { # $1 name, $2 mode (buffered|direct) → MB/s
  local flag=()
  [ "$2" = direct ] && flag=(iflag=direct)
  drop
  warm_store
  case $1 in
    s3 | http | rbd)
      case $1 in
        s3) mount_vdiskfs "s3://bench/img.qcow2" ;;
        http) mount_vdiskfs "$http_url/img.qcow2" ;;
        rbd) mount_vdiskfs "rbd:rbd/img-qcow2" ;;
      esac
      dd_mbps "$work/mnt/disk.raw" "${flag[@]}"
      umount_vdiskfs >&2
      ;;
    qsd_*)
      case $1 in
        qsd_http) qsd_mount "driver=http,url=$http_url/img.qcow2" ;;
        qsd_s3) qsd_mount "driver=http,url=$AWS_ENDPOINT_URL/bench/img.qcow2" ;;
        qsd_rbd) qsd_mount "driver=rbd,pool=rbd,image=img-qcow2,conf=$CEPH_CONF" ;;
      esac
      DD_TIMEOUT=$PEER_TIMEOUT dd_mbps "$work/qsd/disk.raw" "${flag[@]}"
      qsd_stop >&2
      ;;
  esac
}
sequential() { # → seq_<mode>_<name> medians in MB/s
  local name mode result
  for mode in buffered direct; do
    for name in $sources; do eval "runs_${mode}_$name=()"; done
    for _ in $(seq "$RUNS"); do
      for name in $sources; do
        # A peer that never finished once is not waited for again.
        eval "case \" \${runs_${mode}_$name[*]} \" in *' failed '*) continue ;; esac"
        result=$(seq_run "$name" "$mode")
        eval "runs_${mode}_$name+=(\"$result\")"
      done
    done
    for name in $sources; do
      eval "seq_${mode}_$name=\$(printf '%s\n' \"\${runs_${mode}_$name[@]}\" | median)"
    done
  done
}

random_warm() {
  local remote=() local_=()
  for _ in $(seq "$RUNS"); do
    mount_vdiskfs "s3://bench/img.qcow2" "remote_cache=$((SIZE_MB * 2))M"
    dd if="$work/mnt/disk.raw" of=/dev/null bs=1M iflag=direct 2>/dev/null
    remote+=("$(fio_iops "$work/mnt/disk.raw")")
    umount_vdiskfs
    mount_vdiskfs "$work/www/img.qcow2"
    dd if="$work/mnt/disk.raw" of=/dev/null bs=1M iflag=direct 2>/dev/null
    local_+=("$(fio_iops "$work/mnt/disk.raw")")
    umount_vdiskfs
  done
  rand_remote=$(printf '%s\n' "${remote[@]}" | median)
  rand_local=$(printf '%s\n' "${local_[@]}" | median)
}

# ---------------------------------------------------------------- run
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$here/results"
mkdir -p "$results"
start_servers
make_image
PARTS=${PARTS:-one seq rand}
one_ours=- one_download=- rand_remote=- rand_local=-
for mode in buffered direct; do for name in $sources; do eval "seq_${mode}_$name=-"; done; done
case " $PARTS " in *" one "*) log "1/3 one file out of the image"; one_file ;; esac
case " $PARTS " in *" seq "*) log "2/3 sequential reads"; sequential ;; esac
case " $PARTS " in *" rand "*) log "3/3 random reads, warm cache"; random_warm ;; esac
ratio() { # a / b, or n/a when either failed
  awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'
}
{
  echo "# vdiskfs remote images: $stamp"
  echo
  echo "Image: qcow2 of a ${SIZE_MB} MiB ext4 (${image_mb} MiB file), on 127.0.0.1: radosgw (S3), nginx (HTTP), Ceph RBD (memstore OSD)."
  echo "vdiskfs $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown), $(qemu-storage-daemon --version | head -1), $(nproc) cores, medians of $RUNS runs."
  echo
  echo "| benchmark | vdiskfs | peer | ratio | target |"
  echo "|---|---|---|---|---|"
  echo "| one 1 MiB file out of the image (ms): S3 mount vs download + local mount | $one_ours | $one_download | $(ratio "$one_ours" "$one_download") | <= 0.05 |"
  for mode in buffered direct; do
    flag="dd bs=1M"
    [ $mode = direct ] && flag="dd bs=1M iflag=direct"
    row() { # label ours peer
      local ours peer
      eval "ours=\$seq_${mode}_$2 peer=\$seq_${mode}_$3"
      echo "| sequential $flag (MB/s): $1 | $ours | $peer | $(ratio "$ours" "$peer") | >= 1.5 |"
    }
    row "S3 vs qsd curl driver over nginx" s3 qsd_http
    row "S3 vs qsd curl driver from radosgw (public-read)" s3 qsd_s3
    row "HTTP (nginx) vs qsd curl driver over nginx" http qsd_http
    row "RBD vs qsd rbd driver" rbd qsd_rbd
  done
  echo "| 4 KiB random reads, warm cache (IOPS): S3 vs the local file | $rand_remote | $rand_local | $(ratio "$rand_remote" "$rand_local") | >= 0.8 |"
} | tee "$results/$stamp-remote.md"
log "results: $results/$stamp-remote.md"
