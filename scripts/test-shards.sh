#!/usr/bin/env bash
# `make test`'s plain suite in two test processes at once (the bundle `swift test` built, run
# directly: `swift test` holds a lock on .build, so two of it would run one after the other).
#
#   scripts/test-shards.sh BIN_PATH LOG
#
# Why: Swift Testing runs tests on the cooperative thread pool, one thread per core, and most of
# our tests block a thread on a mount, a daemon or qemu-img; on a 2-core machine two tests at a
# time left a fifth of the CPU idle. Two processes run four at a time (measured: 358 s -> 265 s).
# Shard A is the command-line and mount suites plus the remote stores (so one Ceph cluster serves
# both: `CephCluster.shared()` starts one per process); shard B is everything else. Each shard's
# lines are printed as they come, prefixed "A| " or "B| "; at the end, each shard's exit status,
# its failures and its last line. Both outputs go to LOG whole, A's then B's; the exit status is
# non-zero when either shard failed.
set -uo pipefail
bin=$1 log=$2
bundle=$bin/vdiskfsPackageTests.xctest
shard_a=(--filter '^vdiskfsTests\.' --filter '^RemoteStoreTests\.')
shard_b=(--skip '^vdiskfsTests\.' --skip '^RemoteStoreTests\.')
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
shard() { # name output args...: the bundle's exit status
  local name=$1 out=$2
  shift 2
  "$bundle" --testing-library swift-testing "$@" 2>&1 | tee "$out" | sed -u "s/^/$name| /"
  return "${PIPESTATUS[0]}"
}
shard A "$dir/a" "${shard_a[@]}" &
a=$!
shard B "$dir/b" "${shard_b[@]}" &
b=$!
wait $a
status_a=$?
wait $b
status_b=$?
{
  echo "== shard A (vdiskfsTests, RemoteStoreTests): exit $status_a"
  cat "$dir/a"
  echo "== shard B (every other suite): exit $status_b"
  cat "$dir/b"
} >"$log"
for name in A B; do
  out=$dir/$(echo "$name" | tr AB ab)
  status=$status_a
  [ "$name" = B ] && status=$status_b
  echo "== shard $name: exit $status"
  grep -a '✘' "$out" || true
  tail -n 1 "$out"
done
[ "$status_a" = 0 ] && [ "$status_b" = 0 ]
