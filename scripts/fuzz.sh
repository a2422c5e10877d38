#!/usr/bin/env bash
# `make fuzz`: builds every fuzz target of Fuzz/ with libFuzzer and AddressSanitizer, makes a seed
# corpus per format with qemu-img/qemu-io (and sfdisk/sgdisk for partition tables), runs each
# target for FUZZ_SECONDS (60) and prints executions and coverage per target.
#
#   scripts/fuzz.sh [TARGET...]      (default: every Fuzz* target)
#
# Environment: FUZZ_SECONDS (60), FUZZ_WORK (a temporary folder; kept when set, so corpora grow
# across runs), FUZZ_CONFIG (release; debug builds in about a third of the time, for short runs),
# FUZZ_TEST_SEEDS (1; 0 skips the seeds the tests build), FUZZ_TIMEOUT (10 seconds per input;
# raise it on a machine busy with other work, or a starved input counts as a hang), FUZZ_JOBS
# (the core count: targets run that many at a time, each on one core). A crash,
# trap, leak, timeout or out-of-memory stops that target with the input saved as
# $FUZZ_WORK/<target>/crash-* (or timeout-*, oom-*); the script exits non-zero after the last
# target. A found input goes, after its fix, into Tests/FuzzRegressions/<target>/, which
# `make test` replays.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-60}
work=${FUZZ_WORK:-}
keep=1
if [ -z "$work" ]; then work=$(mktemp -d /var/tmp/vdiskfs-fuzz.XXXXXX); keep=0; fi
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(FuzzPartitions FuzzChain FuzzVMDKDescriptor FuzzOVA)
  for d in "$here"/Sources/Formats/*/; do targets+=("Fuzz$(basename "$d")"); done
fi

cd "$here/Fuzz"
flags=(-c "${FUZZ_CONFIG:-release}" --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address)
for t in "${targets[@]}"; do swift build "${flags[@]}" --product "$t" >&2; done
bin=$(swift build "${flags[@]}" --show-bin-path)

# Seeds: small images of every variant the parser reads, with data in them.
seed() { # target file...
  mkdir -p "$work/$1/seeds"
  local f
  for f in "${@:2}"; do [ -f "$f" ] && cp "$f" "$work/$1/seeds/"; done
}
s="$work/make-seeds"
mkdir -p "$s"
img() { qemu-img create -q "$@"; }
io() { qemu-io -f "$1" -c "write -P 0x5a 0 64k" -c "write -P 0xa5 1M 8k" -c "write -z 2M 64k" "$2" >/dev/null; }
img -f qcow2 "$s/a.qcow2" 8M && io qcow2 "$s/a.qcow2"
img -f qcow2 -o cluster_size=4096,lazy_refcounts=on "$s/b.qcow2" 8M && io qcow2 "$s/b.qcow2"
img -f qcow2 -o extended_l2=on,cluster_size=65536 "$s/c.qcow2" 8M && io qcow2 "$s/c.qcow2"
img -f qcow2 -b a.qcow2 -F qcow2 "$s/d.qcow2" && qemu-io -f qcow2 -c "write -P 0x77 4k 4k" "$s/d.qcow2" >/dev/null
qemu-img snapshot -c snap "$s/a.qcow2"
qemu-img convert -c -O qcow2 "$s/a.qcow2" "$s/z.qcow2"
qemu-img convert -c -O qcow2 -o compression_type=zstd "$s/a.qcow2" "$s/zs.qcow2"
img -f vmdk "$s/a.vmdk" 8M && io vmdk "$s/a.vmdk"
qemu-img convert -O vmdk -o subformat=streamOptimized "$s/a.vmdk" "$s/s.vmdk"
img -f vhdx -o block_size=1M "$s/a.vhdx" 8M && io vhdx "$s/a.vhdx"
img -f vpc "$s/a.vhd" 8M && io vpc "$s/a.vhd"
img -f vpc -o subformat=fixed "$s/f.vhd" 2M
img -f vdi "$s/a.vdi" 8M && io vdi "$s/a.vdi"
img -f qcow "$s/a.qcow" 8M && io qcow "$s/a.qcow"
# QEMU 7.2 exits 1 after writing a correct compressed qcow v1 (its end-of-stream write is refused).
qemu-img convert -c -O qcow "$s/a.qcow" "$s/c.qcow" || [ -s "$s/c.qcow" ]
img -f qed -o cluster_size=4096 "$s/a.qed" 8M && io qed "$s/a.qed"
img -f qed -o table_size=2,cluster_size=65536 -b a.vdi -F vdi "$s/b.qed" && io qed "$s/b.qed"
img -f parallels "$s/a.hds" 8M && io parallels "$s/a.hds"
img -f parallels -o cluster_size=4k "$s/b.hds" 4M && io parallels "$s/b.hds"
head -c 200k /dev/urandom >"$s/cloop.in" && truncate -s 1M "$s/cloop.in"
create_compressed_fs -q -B 16384 "$s/cloop.in" "$s/a.cloop" >/dev/null 2>&1
truncate -s 4M "$s/mbr.raw" && printf 'label: dos\n1M,1M,83\n2M,,5\n' | sfdisk -q "$s/mbr.raw" >/dev/null
truncate -s 4M "$s/gpt.raw" && sgdisk -o -n 1:2048:4095 -n 2:4096:6143 "$s/gpt.raw" >/dev/null
# FuzzChain's inputs (Fuzz/Sources/FuzzHarness/ChainInput.swift): flags, the top's length
# (little-endian), three guest offsets, the top, its parent. One read-only and one written seed
# per pair.
le() { # value bytes: the value little-endian as printf escapes
  local v=$1 i out=
  for ((i = 0; i < $2; i++)); do out+=$(printf '\\x%02x' $(((v >> (8 * i)) & 255))); done
  printf '%s' "$out"
}
chain_seed() { # name top parent
  local size flags
  size=$(stat -c %s "$2")
  for flags in 0 1; do
    { printf "$(le "$flags" 1)$(le "$size" 4)$(le 4096 8)$(le 1048573 8)$(le 2101248 8)"
      cat "$2" "$3"; } >"$s/$1-$flags.chain"
  done
}
# Small images (4 MiB disks, 4 KiB qcow2 clusters, data in one VDI block and one VHD block), so a
# chain input stays within FuzzChain's max_len and runs fast.
c="$s/chain"
mkdir -p "$c"
small() { # format name [create options]
  img -f "$1" ${3:+-o "$3"} "$c/$2" 4M && qemu-io -f "$1" -c "write -P 0x5a 0 4k" -c "write -P 0xa5 64k 8k" "$c/$2" >/dev/null
}
small qcow2 p.qcow2 cluster_size=4096
small vmdk p.vmdk
small vdi p.vdi
small vpc p.vhd
small qed p.qed cluster_size=4096,table_size=2
small qcow p.qcow
over() { # format name parent parent-format [create options]
  img -f "$1" ${5:+-o "$5"} -b "$3" -F "$4" "$c/$2" &&
    qemu-io -f "$1" -c "write -P 0x33 4k 4k" -c "write -z 1M 4k" "$c/$2" >/dev/null
}
over qcow2 on-qcow2.qcow2 p.qcow2 qcow2 cluster_size=4096
over qcow2 on-vmdk.qcow2 p.vmdk vmdk cluster_size=4096
over qcow2 on-vdi.qcow2 p.vdi vdi cluster_size=4096
over qcow2 on-vhd.qcow2 p.vhd vpc cluster_size=4096
over vmdk on-vmdk.vmdk p.vmdk vmdk
over qcow2 on-qed.qcow2 p.qed qed cluster_size=4096
over qed qed-on-vdi.qed p.vdi vdi cluster_size=4096,table_size=2
over qcow2 on-qcow.qcow2 p.qcow qcow cluster_size=4096
chain_seed qcow2-qcow2 "$c/on-qcow2.qcow2" "$c/p.qcow2"
chain_seed qcow2-vmdk "$c/on-vmdk.qcow2" "$c/p.vmdk"
chain_seed qcow2-vdi "$c/on-vdi.qcow2" "$c/p.vdi"
chain_seed qcow2-vhd "$c/on-vhd.qcow2" "$c/p.vhd"
chain_seed vmdk-vmdk "$c/on-vmdk.vmdk" "$c/p.vmdk"
chain_seed qcow2-qed "$c/on-qed.qcow2" "$c/p.qed"
chain_seed qed-vdi "$c/qed-on-vdi.qed" "$c/p.vdi"
chain_seed qcow2-qcow "$c/on-qcow.qcow2" "$c/p.qcow"
for f in p.vdi p.vhd p.qed; do chain_seed "single-$f" "$c/$f" /dev/null; done
seed FuzzChain "$s"/*.chain
# FuzzVMDKDescriptor's inputs (Tests/FuzzHarness/DescriptorHarness.swift): the descriptor's
# length (2 bytes, little-endian), the descriptor, then the bytes of every extent it names.
mkdir -p "$s/desc"
for sub in monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
  img -f vmdk -o subformat=$sub "$s/desc/$sub.vmdk" 4M
  qemu-io -f vmdk -c "write -P 0x6b 64k 4k" "$s/desc/$sub.vmdk" >/dev/null
  extent=$(ls "$s/desc/$sub"-*.vmdk 2>/dev/null | head -1)
  { printf "$(le "$(stat -c %s "$s/desc/$sub.vmdk")" 2)"; cat "$s/desc/$sub.vmdk" "${extent:-/dev/null}"; } \
    >"$s/$sub.desc"
done
seed FuzzVMDKDescriptor "$s"/*.desc
# FuzzOVA's inputs: a small OVA (an OVF, a streamOptimized VMDK, a SHA-256 manifest), ustar and pax,
# and a GNU one with a hard link to the disk and a sparse member (old GNU 'S' with an extension
# header) in it.
mkdir -p "$s/ova"
img -f qcow2 "$s/ova/src.qcow2" 4M && io qcow2 "$s/ova/src.qcow2"
qemu-img convert -O vmdk -o subformat=streamOptimized "$s/ova/src.qcow2" "$s/ova/d.vmdk"
cat >"$s/ova/a.ovf" <<OVF
<?xml version="1.0"?>
<Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="d.vmdk" ovf:id="f1"/></References>
<DiskSection><Disk ovf:diskId="d1" ovf:capacity="4" ovf:capacityAllocationUnits="byte * 2^20" ovf:fileRef="f1"/></DiskSection></Envelope>
OVF
(cd "$s/ova" && echo "SHA256(d.vmdk)= $(sha256sum d.vmdk | cut -d' ' -f1)" >a.mf &&
  tar --format=ustar -cf ../ustar.ova a.ovf d.vmdk a.mf && tar --format=pax -cf ../pax.ova a.ovf d.vmdk a.mf &&
  ln d.vmdk l.vmdk && truncate -s 8M sp.img &&
  for i in 0 1 2 3 4 5; do printf x | dd of=sp.img bs=1 seek=$((i << 20)) conv=notrunc status=none; done &&
  tar -S --format=gnu -cf ../links.ova a.ovf d.vmdk l.vmdk sp.img a.mf)
seed FuzzOVA "$s"/*.ova
# What qemu-img cannot make (COWD, seSparse, stream-optimized with a footer, VHD and VHDX
# differencing, qcow v1 with other cluster and table sizes, DMG), as the tests build it
# (Tests/Fixtures/FuzzSeeds.swift). FUZZ_TEST_SEEDS=0 skips the test build this needs.
if [ "${FUZZ_TEST_SEEDS:-1}" = 1 ]; then
  (cd "$here" && swift build --build-tests >&2 &&
    VDISKFS_FUZZ_SEEDS="$s/built" swift test --skip-build \
      --filter VMDKChainAndBuiltTests --filter SESparseGrainPoolTests --filter VHDDifferencingTests \
      --filter VHDXTests.DifferencingTests --filter QCOW1ReadTests --filter BochsTests --filter ParallelsReadTests --filter DMGTests.DMGTests \
      --filter DMGTests.DMGResourceForkTests --filter DMGTests.DMG2ImgTests \
      >"$s/built.log" 2>&1) || { echo "fuzz: the tests that build seeds failed (see $s/built.log)" >&2; exit 1; }
  for t in FuzzVMDK FuzzVHD FuzzVHDX FuzzQCOW1 FuzzBochs FuzzParallels FuzzDMG; do seed "$t" "$s/built/$t"/*; done
fi
seed FuzzQCOW2 "$s"/*.qcow2 "$c"/*.qcow2
seed FuzzVMDK "$s"/*.vmdk "$c"/*.vmdk
seed FuzzVHDX "$s"/*.vhdx
seed FuzzVHD "$s"/*.vhd
seed FuzzVDI "$s"/*.vdi
seed FuzzQED "$s"/*.qed
seed FuzzQCOW1 "$s"/*.qcow
seed FuzzParallels "$s"/*.hds
seed FuzzCloop "$s"/*.cloop
seed FuzzPartitions "$s"/*.raw

# The longest input per target: the largest seed (VHDX images start at 8 MiB, qemu's layout), and
# FuzzChain's small pairs with room to grow.
max_len() {
  case $1 in
    FuzzChain) echo $((3 << 20)) ;;
    FuzzVHDX) echo $((12 << 20)) ;;
    *) echo $((8 << 20)) ;;
  esac
}

# Each target is one process on one core: FUZZ_JOBS (the core count) of them run at once, and
# the table is printed in target order once all have finished.
jobs_max=${FUZZ_JOBS:-$(nproc)}
fuzz_one() {
  local t=$1 dir="$work/$1"
  mkdir -p "$dir/corpus" "$dir/seeds"
  local log="$dir/fuzz.log" result=ok
  (cd "$dir" && SWIFT_BACKTRACE=enable=no "$bin/$t" corpus seeds -max_total_time="$seconds" \
    -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 >"$log" 2>&1) ||
    result="FAILED (see $log)"
  local execs cov ft
  execs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{ print $2 }')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{ print $2 }')
  printf '%-16s %10s %12s %8s %8s %s\n' "$t" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result" >"$dir/result"
}
for t in "${targets[@]}"; do
  rm -f "$work/$t/result"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  fuzz_one "$t" &
done
wait

failed=0
printf '%-16s %10s %12s %8s %8s %s\n' target seconds executions cov ft result
for t in "${targets[@]}"; do
  line=$(cat "$work/$t/result" 2>/dev/null) || line="$(printf '%-16s' "$t") FAILED (no result)"
  echo "$line"
  case $line in *FAILED*) failed=1; keep=1 ;; esac
done
exit $failed
