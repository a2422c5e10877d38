#!/bin/bash
# A throwaway single-node Ceph cluster for the remote-store tests: one monitor, one OSD on
# memstore (RAM), one radosgw on 127.0.0.1, no manager, `auth none`, everything under DIR,
# daemons started directly (no systemd).
#
#   scripts/ceph-cluster.sh start DIR [OWNER_PID]   start it; prints the `env` lines
#   scripts/ceph-cluster.sh env DIR                 CEPH_CONF, AWS_ENDPOINT_URL, keys, as shell lines
#   scripts/ceph-cluster.sh stop DIR                kill every daemon started in DIR, remove DIR
#   scripts/ceph-cluster.sh rgw-stop DIR            kill radosgw alone (fault tests)
#   scripts/ceph-cluster.sh rgw-start DIR           start it again on the same port, wait until it answers
#
# `start` writes DIR/ceph.conf, DIR/rgw-endpoint, DIR/env, makes an S3 user (keys below) and an
# `rbd` pool. With OWNER_PID, a watcher stops the cluster once that process is gone (a test run
# killed before its own cleanup leaves nothing behind). `stop` works after a partial start: it
# kills what DIR/pids lists, then removes DIR. Killed daemons can linger as zombies here (no
# reaper), so stopping waits on /proc/PID/stat's state, not `kill -0`.
set -euo pipefail

ACCESS_KEY=vdiskfstestaccess
SECRET_KEY=vdiskfstestsecret0123456789
# The OSD keeps everything in RAM: CEPH_MEMSTORE_MB (1536) is all the cluster can hold.
MEMSTORE_BYTES=$((${CEPH_MEMSTORE_MB:-1536} << 20))

usage() { echo "usage: $0 start|stop|env DIR [OWNER_PID]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
owner=${3:-}

# Whether PID is still a live process (neither gone nor a zombie).
alive() {
  local state
  state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Whether PID is a process of this cluster (its command line names DIR): a pid in DIR/pids whose
# daemon died long ago may belong to an unrelated process now.
ours() {
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$dir"
}

# A TCP port nothing listens on now (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a daemon in the foreground of a background job, its output in DIR/log, its pid in DIR/pids.
daemon() {
  local name=$1
  shift
  setsid "$@" -f </dev/null >>"$dir/log/$name.out" 2>&1 &
  echo "$! $name" >>"$dir/pids"
  disown $!
}

stop_cluster() {
  [ -d "$dir" ] || return 0
  local pids=() pid
  if [ -f "$dir/pids" ]; then
    while read -r pid _; do if ours "$pid"; then pids+=("$pid"); fi; done <"$dir/pids"
  fi
  # The watcher first (it would run stop itself), then the daemons. SIGKILL: everything lives in
  # RAM and DIR, nothing needs a clean shutdown (radosgw takes 10 s to honour SIGTERM).
  if [ -f "$dir/watcher" ]; then
    pid=$(cat "$dir/watcher")
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  [ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + 10)) left
  while :; do
    left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      echo "ceph-cluster: processes did not die: ${left[*]}" >&2
      return 1
    fi
    sleep 0.05
  done
  rm -rf "$dir"
}

print_env() {
  [ -f "$dir/env" ] || { echo "ceph-cluster: no cluster in $dir" >&2; exit 1; }
  cat "$dir/env"
}

# Waits until `cmd...` succeeds, at most `seconds`.
wait_for() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "ceph-cluster: timed out waiting for: $*" >&2; return 1; }
    sleep 0.05
  done
}

start_cluster() {
  [ ! -e "$dir/pids" ] || { echo "ceph-cluster: $dir already has a cluster" >&2; exit 1; }
  mkdir -p "$dir"/{log,run,mon,osd/0,rgw}
  : >"$dir/pids"
  local fsid mon1 mon2 rgw_port conf=$dir/ceph.conf
  fsid=$(cat /proc/sys/kernel/random/uuid)
  mon1=$(free_port)
  mon2=$(free_port)
  rgw_port=$(free_port)
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms mon client mode = crc
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
crash dir = $dir/crash
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
paxos propose interval = 0.05
mon data = $dir/mon
osd data = $dir/osd/\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd max object name len = 256
osd max object namespace len = 64
rgw data = $dir/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = 127.0.0.1
EOF
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]" \
    "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >/dev/null
  daemon mon ceph-mon -c "$conf" -i a
  local uuid
  uuid=$(cat /proc/sys/kernel/random/uuid)
  # `osd new` waits for the monitor to be up and elected.
  wait_for 20 ceph -c "$conf" --connect-timeout 5 osd new "$uuid" 0
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >/dev/null 2>&1
  daemon osd ceph-osd -c "$conf" -i 0
  ceph -c "$conf" osd pool create rbd 8 8 >/dev/null 2>&1
  ceph -c "$conf" osd pool application enable rbd rbd >/dev/null 2>&1
  daemon rgw radosgw -c "$conf" -n client.rgw
  radosgw-admin -c "$conf" user create --uid=vdiskfs --display-name=vdiskfs \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null
  wait_for 30 curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$rgw_port/"
  echo "http://127.0.0.1:$rgw_port" >"$dir/rgw-endpoint"
  cat >"$dir/env.tmp" <<EOF
CEPH_CONF=$conf
AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_REGION=us-east-1
EOF
  mv "$dir/env.tmp" "$dir/env"
  if [ -n "$owner" ]; then
    setsid "$(realpath "$0")" watch "$dir" "$owner" </dev/null >>"$dir/log/watcher.out" 2>&1 &
    echo $! >"$dir/watcher"
  fi
  print_env
}

# radosgw alone, for tests of a store that goes away and comes back.
rgw_stop() {
  local pid name left
  while read -r pid name; do
    [ "$name" = rgw ] && ours "$pid" || continue
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 200); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && { echo "ceph-cluster: radosgw $pid did not die" >&2; return 1; }
  done <"$dir/pids"
  return 0
}
rgw_start() {
  daemon rgw radosgw -c "$dir/ceph.conf" -n client.rgw
  wait_for 30 curl -sf -o /dev/null --max-time 1 "$(cat "$dir/rgw-endpoint")/"
}

case $cmd in
  rgw-stop) rgw_stop ;;
  rgw-start) rgw_start ;;
  start)
    dir=$(realpath -m "$dir")
    started=
    # errexit does not apply inside a function called from `if`, so failure is caught on EXIT.
    trap '[ -n "$started" ] || { echo "ceph-cluster: start failed; logs in $dir/log:" >&2;
      tail -n 5 "$dir"/log/*.out >&2 2>/dev/null || true; stop_cluster; }' EXIT
    start_cluster
    started=1
    ;;
  stop) stop_cluster ;;
  env) print_env ;;
  watch)
    # Stops the cluster once OWNER_PID is gone or a zombie.
    [ -n "$owner" ] || usage
    while alive "$owner"; do sleep 1; done
    rm -f "$dir/watcher"
    stop_cluster
    ;;
  *) usage ;;
esac
