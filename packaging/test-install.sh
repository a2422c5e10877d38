#!/bin/bash
# Tests of vdiskfs installed as a system tool (issue 14), run by `make test` as root:
#   units       systemd-analyze verify on the installed template unit and the example units
#   install     make install / make uninstall under DESTDIR: every file, then none
#   manpage     the page renders without warnings, names every subcommand, every option the
#               parser takes and every -o option MountOptionParser accepts, and its sections
#   completion  the bash completion loads (complete -p vdiskfs) and completes subcommands
#   helper      mount -t fuse.vdiskfs and fstab lines (mount -T) through the installed binary
#   deb         make deb, apt install, --version, mount a qcow2 and read it, purge: nothing left
#   user        an unprivileged user mounts, reads, writes and unmounts their own qcow2
# Every test runs in a subshell whose EXIT trap undoes what it did (mounts, packages, users,
# /dev/fuse's mode). Usage: test-install.sh STATIC_BINARY GENERATED_DIR [TEST...]
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "$1")
GEN=$(realpath "$2")
shift 2
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(units install manpage completion helper deb user)
: "${VERSION:?set by make}"
REPO=$PWD
export LC_ALL=C.UTF-8

fail() { echo "FAIL: $*" >&2; exit 1; }
mounted() { awk -v m="$1" '$2 == m {found=1} END {exit !found}' /proc/mounts; }
# Waits up to 10 s until no vdiskfs serves $1 any more.
wait_unmounted() {
  for _ in $(seq 100); do
    mounted "$1" || pgrep -f "vdiskfs .*$1( |$)" >/dev/null || return 0
    sleep 0.1
  done
  return 1
}
# Unmounts $1 if still mounted (lazily if busy) and waits for its daemon: for EXIT traps.
force_unmount() {
  if mounted "$1"; then umount "$1" 2>/dev/null || umount -l "$1"; fi
  wait_unmounted "$1" || true
}
# A small qcow2 with data at 0 and 3 MiB, and its raw bytes from qemu-img: $1.qcow2, $1.raw.
make_image() {
  qemu-img create -q -f qcow2 "$1.qcow2" 4M
  qemu-io -f qcow2 -c "write -q -P 0x5a 0 1M" -c "write -q -P 0xa5 3M 64k" "$1.qcow2" >/dev/null
  qemu-img convert -O raw "$1.qcow2" "$1.raw"
}

# The options MountOptionParser.parse accepts, read from its source: the case labels of its
# switch and of OpeningOptionParser's (the options info and map take too), and its passThrough
# and ignored sets.
parser_options() {
  local src=Sources/vdiskfs/MountOptionParser.swift
  {
    grep -hoE '^ *case "[^:]*:' "$src" Sources/vdiskfs/OpeningOptions.swift | grep -oE '"[^"]+"'
    sed -n '/static let passThrough: Set<String> = \[/,/\]/p; /static let ignored: Set<String> = \[/,/\]/p' "$src" \
      | grep -oE '"[^"]+"'
  } | tr -d '"' | sort -u
}

test_units() {
  t=$(mktemp -d); trap 'set +e; force_unmount "$t/mnt"; rm -rf "$t"' EXIT
  make --no-print-directory -s install PREFIX="$t/usr" >/dev/null || fail "make install PREFIX=$t/usr"
  local unitdir=$t/usr/lib/systemd/system
  grep -q "^ExecStart=$t/usr/bin/vdiskfs " "$unitdir/vdiskfs@.service" || fail "ExecStart does not name the installed binary"
  # An instance, as systemctl would load it, with its man page findable (Documentation=man:).
  local out
  out=$(cd "$unitdir" && MANPATH="$t/usr/share/man" systemd-analyze verify --man=yes ./vdiskfs@mnt-vm.service 2>&1) \
    || fail "verify vdiskfs@mnt-vm.service: $out"
  [ -z "$out" ] || fail "verify vdiskfs@mnt-vm.service said: $out"
  out=$(cd "$t/usr/share/doc/vdiskfs/examples" \
    && MANPATH="$t/usr/share/man" systemd-analyze verify --man=yes ./mnt-vm.mount ./mnt-vm.automount 2>&1) \
    || fail "verify the example units: $out"
  [ -z "$out" ] || fail "verify the example units said: $out"
  # verify must catch a broken unit, or the checks above prove nothing.
  sed 's/^Type=notify/Type=notfy/' "$unitdir/vdiskfs@.service" > "$t/vdiskfs@.service"
  out=$(cd "$t" && systemd-analyze verify --man=no ./vdiskfs@mnt-vm.service 2>&1)
  [ -n "$out" ] || fail "systemd-analyze verify did not notice Type=notfy"
  grep -q '^DeviceAllow=/dev/fuse rw$' "$unitdir/vdiskfs@.service" || fail "the unit does not allow /dev/fuse"
  run_unit_commands "$unitdir/vdiskfs@.service" ""
  run_unit_commands "$unitdir/vdiskfs@.service" "ro,allow_other"
  make --no-print-directory -s uninstall PREFIX="$t/usr" >/dev/null
}

# Runs the unit's ExecStart and ExecStop as systemd would for an instance whose configuration
# has OPTIONS=$2 (no systemd runs here as PID 1): ${IMAGE} and ${OPTIONS} each become one
# argument, %f the unescaped instance. The mount must serve the image, and after ExecStop the
# process must exit 0 with what was written in the image.
run_unit_commands() {
  local unit=$1 options=$2
  make_image "$t/vm"
  mkdir -p "$t/mnt"
  local instance; instance=$(systemd-escape --path "$t/mnt")
  local f; f=$(systemd-escape --unescape --path "$instance")
  [ "$f" = "$t/mnt" ] || fail "%f of $instance is $f"
  expand() {
    local word; set -f
    for word in $1; do
      case $word in
        '${OPTIONS}') printf '%s\0' "$options" ;;
        '${IMAGE}') printf '%s\0' "$t/vm.qcow2" ;;
        %f) printf '%s\0' "$f" ;;
        *) printf '%s\0' "$word" ;;
      esac
    done
  }
  local start stop
  mapfile -d '' start < <(expand "$(sed -n 's/^ExecStart=//p' "$unit")")
  mapfile -d '' stop < <(expand "$(sed -n 's/^ExecStop=//p' "$unit")")
  "${start[@]}" & local pid=$!
  local i; for i in $(seq 100); do mounted "$f" && break; sleep 0.1; done
  mounted "$f" || { kill "$pid"; fail "ExecStart (${start[*]}) did not mount"; }
  cmp "$f/disk.raw" "$t/vm.raw" || { "${stop[@]}"; fail "ExecStart's mount differs from qemu-img"; }
  if [ -z "$options" ]; then
    printf 'written through the unit' | dd of="$f/disk.raw" bs=512 seek=4096 conv=notrunc status=none
  fi
  "${stop[@]}" || fail "ExecStop (${stop[*]}) failed"
  wait "$pid" || fail "vdiskfs exited $? after ExecStop"
  mounted "$f" && fail "still mounted after ExecStop"
  if [ -z "$options" ]; then
    qemu-img check -q "$t/vm.qcow2" || fail "qemu-img check after ExecStop"
    qemu-io -f qcow2 -c "read -v 2M 24" "$t/vm.qcow2" | grep -q 'written.through.' || fail "the write is not in the image"
  fi
  rm -rf "$t/vm.qcow2" "$t/vm.raw"
}

test_install() {
  t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
  make --no-print-directory -s install DESTDIR="$t" PREFIX=/usr/local >/dev/null || fail "make install DESTDIR"
  local expected="/usr/local/bin/vdiskfs
/usr/local/lib/systemd/system/vdiskfs@.service
/usr/local/share/bash-completion/completions/vdiskfs
/usr/local/share/doc/vdiskfs/examples/fstab.example
/usr/local/share/doc/vdiskfs/examples/mnt-vm.automount
/usr/local/share/doc/vdiskfs/examples/mnt-vm.conf.example
/usr/local/share/doc/vdiskfs/examples/mnt-vm.mount
/usr/local/share/fish/vendor_completions.d/vdiskfs.fish
/usr/local/share/man/man1/vdiskfs.1
/usr/local/share/zsh/site-functions/_vdiskfs"
  local got; got=$(cd "$t" && find . -type f | sed 's/^\.//' | sort)
  [ "$got" = "$expected" ] || fail "make install put:"$'\n'"$got"$'\n'"expected:"$'\n'"$expected"
  [ -x "$t/usr/local/bin/vdiskfs" ] || fail "the binary is not executable"
  grep -q '^ExecStart=/usr/local/bin/vdiskfs ' "$t/usr/local/lib/systemd/system/vdiskfs@.service" \
    || fail "ExecStart does not name /usr/local/bin/vdiskfs"
  grep -q '/usr/local/lib/systemd/system/vdiskfs@.service' "$t/usr/local/share/man/man1/vdiskfs.1" \
    || fail "the man page's FILES does not name the installed unit"
  # --version: the package version and the commit this tree is at.
  local version; version=$("$t/usr/local/bin/vdiskfs" --version)
  local head; head=$(git rev-parse --short=12 HEAD)
  [[ "$version" == "$VERSION (git $head"* ]] || fail "--version printed '$version', expected $VERSION (git $head...)"
  make --no-print-directory -s uninstall DESTDIR="$t" PREFIX=/usr/local >/dev/null || fail "make uninstall"
  got=$(cd "$t" && find . -type f)
  [ -z "$got" ] || fail "make uninstall left: $got"
}

test_manpage() {
  t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
  local page=$GEN/vdiskfs.1
  [ -s "$page" ] || fail "no man page at $page"
  # groff's own warnings (-ww) and man-db's lexgrog must be silent.
  local warnings; warnings=$(groff -ww -z -t -man "$page" 2>&1)
  [ -z "$warnings" ] || fail "groff warnings: $warnings"
  lexgrog "$page" >/dev/null || fail "lexgrog cannot read the NAME section"
  mkdir -p "$t/man1" && cp "$page" "$t/man1/"
  man -M "$t" -w vdiskfs >/dev/null || fail "man does not find vdiskfs in $t"
  # Rendered without hyphenation or line-end breaks inside words.
  groff -t -man -Tascii -rHY=0 -rLL=200n -P-cbou "$page" > "$t/page.txt" 2>/dev/null
  local missing=()
  for section in NAME SYNOPSIS DESCRIPTION COMMANDS "MOUNT OPTIONS" SYSTEMD "UNPRIVILEGED USE" "EXIT STATUS" \
    ENVIRONMENT FILES EXAMPLES "SEE ALSO"; do
    grep -qx "$section" "$t/page.txt" || missing+=("section $section")
  done
  for command in mount info map; do
    grep -q "^ *vdiskfs $command\b" "$t/page.txt" || missing+=("command $command")
  done
  # Every option of every command, as the parser describes them.
  local option
  while read -r option; do
    grep -qF -- "$option" "$t/page.txt" || missing+=("option $option")
  done < <("$BIN" --experimental-dump-help | jq -r '.. | objects | select(.kind? == "option" or .kind? == "flag")
      | select(.names | map(.name) | index("help") == null and index("version") == null)
      | .names[] | if .kind == "long" then "--" + .name else "-" + .name end' | sort -u)
  sed -n '/^MOUNT OPTIONS$/,/^SYSTEMD$/p' "$t/page.txt" > "$t/options.txt"
  while read -r option; do
    grep -qE -- "(^|[^a-z_])$option([^a-z_]|$)" "$t/options.txt" || missing+=("-o $option")
  done < <(parser_options)
  [ "$(parser_options | wc -l)" -gt 30 ] || fail "read only $(parser_options | wc -l) options from MountOptionParser"
  for code in 0 1 2 3 4 5 6 7 8; do
    sed -n '/^EXIT STATUS$/,/^ENVIRONMENT$/p' "$t/page.txt" | grep -qE "^ +$code\b" || missing+=("exit code $code")
  done
  [ ${#missing[@]} -eq 0 ] || fail "the man page lacks: ${missing[*]}"
}

test_completion() {
  local script=$GEN/vdiskfs.bash
  [ -s "$GEN/_vdiskfs" ] && [ -s "$GEN/vdiskfs.fish" ] || fail "zsh or fish completion missing"
  local out
  out=$(bash --norc --noprofile -c '
    source "$1" || exit 1
    complete -p vdiskfs || exit 1
    COMP_WORDS=(vdiskfs ""); COMP_CWORD=1; COMP_LINE="vdiskfs "; COMP_POINT=${#COMP_LINE}
    _vdiskfs vdiskfs "" vdiskfs
    printf "reply: %s\n" "${COMPREPLY[@]}"' bash "$script" 2>&1) || fail "bash completion: $out"
  grep -q '^complete .* vdiskfs$' <<<"$out" || fail "complete -p vdiskfs printed: $out"
  for word in mount info map; do
    grep -qx "reply: $word" <<<"$out" || fail "completing 'vdiskfs ' does not offer $word: $out"
  done
}

# mount(8) -> mount.fuse3 -> `/bin/sh -c 'vdiskfs IMAGE DIR -o OPTS'`. mount(8) drops PATH from
# the helper's environment, so sh searches its default PATH: the helper test needs the real
# `make install` into /usr/local; whatever was installed there before is put back afterwards.
test_helper() {
  t=$(mktemp -d)
  make --no-print-directory -s install DESTDIR="$t/probe" PREFIX=/usr/local >/dev/null || fail "make install DESTDIR"
  local f
  while read -r f; do
    if [ -e "$f" ]; then mkdir -p "$t/backup$(dirname "$f")" && cp -a "$f" "$t/backup$f"; fi
  done < <(cd "$t/probe" && find . -type f | sed 's/^\.//')
  # Directories the install creates go again too, deepest first.
  (cd "$t/probe" && find . -mindepth 1 -type d | sed 's/^\.//' | sort -r) | while read -r f; do
    [ -e "$f" ] || echo "$f"
  done > "$t/new-dirs"
  trap 'set +e; force_unmount "$t/mnt"; make --no-print-directory -s uninstall PREFIX=/usr/local >/dev/null 2>&1
    [ -d "$t/backup" ] && cp -a "$t/backup/." /
    while read -r d; do rmdir "$d" 2>/dev/null; done < "$t/new-dirs"; rm -rf "$t"' EXIT
  make --no-print-directory -s install PREFIX=/usr/local >/dev/null || fail "make install"
  make_image "$t/vm"
  mkdir "$t/mnt"
  check_mount() {
    mounted "$t/mnt" || fail "$1: not mounted"
    awk -v m="$t/mnt" '$2 == m {print $3, $4}' /proc/mounts | grep -qE '^fuse.vdiskfs ro(,|$)' \
      || fail "$1: not a read-only fuse.vdiskfs mount: $(grep " $t/mnt " /proc/mounts)"
    cmp "$t/mnt/disk.raw" "$t/vm.raw" || fail "$1: disk.raw differs from qemu-img convert"
    local pid; pid=$(pgrep -f "vdiskfs $t/vm.qcow2 $t/mnt" | head -1)
    [ "$(readlink "/proc/$pid/exe")" = /usr/local/bin/vdiskfs ] || fail "$1: served by $(readlink "/proc/$pid/exe")"
    umount "$t/mnt" || fail "$1: umount"
    wait_unmounted "$t/mnt" || fail "$1: vdiskfs still serves after umount"
  }
  mount -t fuse.vdiskfs "$t/vm.qcow2" "$t/mnt" -o ro || fail "mount -t fuse.vdiskfs"
  check_mount "mount -t fuse.vdiskfs"
  printf '%s %s fuse.vdiskfs ro,allow_other,nofail 0 0\n' "$t/vm.qcow2" "$t/mnt" > "$t/fstab"
  mount -T "$t/fstab" "$t/mnt" || fail "mount -T fstab"
  check_mount "fstab line"
  printf '%s %s fuse.vdiskfs ro,allow_other,nofail,x-systemd.automount,x-systemd.idle-timeout=10min 0 0\n' \
    "$t/vm.qcow2" "$t/mnt" > "$t/fstab"
  mount -T "$t/fstab" "$t/mnt" || fail "mount -T fstab (automount line)"
  check_mount "fstab automount line"
}

test_deb() {
  t=$(mktemp -d)
  if dpkg-query -W -f='${Status}' vdiskfs 2>/dev/null | grep -q 'ok installed$'; then
    fail "a vdiskfs package is already installed here; this test installs and purges its own"
  fi
  trap 'set +e; force_unmount "$t/mnt"; dpkg -P vdiskfs >/dev/null 2>&1; rm -rf "$t"' EXIT
  local deb="vdiskfs_${VERSION}_$(dpkg --print-architecture).deb"
  rm -f "$deb"
  make --no-print-directory deb > "$t/build.log" 2>&1 || { cat "$t/build.log"; fail "make deb"; }
  [ -f "$deb" ] || fail "make deb made no $deb"
  sed -n 's/^\([EWIPX]: \)/  lintian: \1/p' "$t/build.log"
  ! grep -q '^E: ' "$t/build.log" || fail "lintian errors"
  local depends; depends=$(dpkg-deb -f "$deb" Depends)
  for dep in libfuse3-3 fuse3 zlib1g libzstd1 libdeflate0 libc6 librbd1 librados2 libcurl4; do
    grep -qE "(^|, )$dep( |,|$)" <<<"$depends" || fail "Depends lacks $dep: $depends"
  done
  ! grep -qi swift <<<"$depends" || fail "Depends names Swift: $depends"
  dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$t/contents"
  for path in /usr/bin/vdiskfs /usr/share/man/man1/vdiskfs.1.gz /usr/share/bash-completion/completions/vdiskfs \
    /usr/share/zsh/vendor-completions/_vdiskfs /usr/share/fish/vendor_completions.d/vdiskfs.fish \
    /lib/systemd/system/vdiskfs@.service /usr/share/doc/vdiskfs/copyright /usr/share/doc/vdiskfs/changelog.gz \
    /usr/share/doc/vdiskfs/examples/mnt-vm.mount; do
    grep -qx "$path" "$t/contents" || fail "the package lacks $path"
  done
  # The binary needs no Swift toolchain: no library from /opt/swift or any libswift*.
  ! ldd "$BIN" | grep -qiE 'swift|Foundation' || fail "the binary links Swift libraries: $(ldd "$BIN")"

  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "./$deb" > "$t/apt.log" 2>&1 \
    || { cat "$t/apt.log"; fail "apt-get install ./$deb"; }
  local version; version=$(/usr/bin/vdiskfs --version) || fail "/usr/bin/vdiskfs --version"
  [[ "$version" == "$VERSION (git "* && "$version" != *unknown* ]] || fail "--version printed '$version'"
  man -w vdiskfs | grep -q '^/usr/share/man/man1/vdiskfs.1.gz$' || fail "man -w vdiskfs: $(man -w vdiskfs 2>&1)"
  local out; out=$(cd /lib/systemd/system && systemd-analyze verify --man=yes vdiskfs@mnt-vm.service 2>&1) \
    || fail "verify the installed unit: $out"
  [ -z "$out" ] || fail "verify the installed unit said: $out"
  make_image "$t/vm"
  mkdir "$t/mnt"
  /usr/bin/vdiskfs "$t/vm.qcow2" "$t/mnt" -o ro || fail "the installed vdiskfs does not mount"
  cmp "$t/mnt/disk.raw" "$t/vm.raw" || fail "disk.raw through the installed binary differs from qemu-img"
  umount "$t/mnt" && wait_unmounted "$t/mnt" || fail "unmount"

  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q vdiskfs > "$t/apt.log" 2>&1 \
    || { cat "$t/apt.log"; fail "apt-get purge vdiskfs"; }
  dpkg-query -W -f='${Status}' vdiskfs 2>/dev/null | grep -q 'ok installed$' && fail "still installed after purge"
  local left=()
  while read -r path; do
    [ -n "$path" ] && [ "$path" != / ] || continue
    # Directories that other packages own or that predate the package stay; files must go.
    if [ -e "$path" ] && { [ ! -d "$path" ] || [[ "$path" == */vdiskfs* ]]; }; then left+=("$path"); fi
  done < <(sed 's|/$||' "$t/contents")
  [ ${#left[@]} -eq 0 ] || fail "purge left: ${left[*]}"
}

# An ordinary user mounts their own image through fusermount3 (setuid), as on a stock Debian,
# where /dev/fuse is 0666: where it is not (this machine: 0600), the test makes it so and puts
# the mode back afterwards.
test_user() {
  t=$(mktemp -d)
  user="vdiskfs-t$$"
  fuse_mode=$(stat -c %a /dev/fuse)
  trap 'set +e
    if mounted "$t/home/mnt"; then fusermount3 -u -z "$t/home/mnt" 2>/dev/null || umount -l "$t/home/mnt"; fi
    for pid in $(pgrep -u "$user"); do kill "$pid"; done; sleep 0.2
    userdel "$user" 2>/dev/null
    chmod "$fuse_mode" /dev/fuse
    rm -rf "$t"' EXIT
  [ -u "$(command -v fusermount3)" ] || fail "fusermount3 is not setuid root"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user" || fail "useradd"
  local uid; uid=$(id -u "$user")
  chmod 0755 "$t"
  install -m 0755 "$BIN" "$t/vdiskfs"
  mkdir "$t/home" "$t/home/mnt"
  make_image "$t/home/vm"
  chown -R "$user:" "$t/home"
  chmod 0666 /dev/fuse
  as_user() { runuser -u "$user" -- "$@"; }
  as_user "$t/vdiskfs" "$t/home/vm.qcow2" "$t/home/mnt" || fail "the user cannot mount"
  mounted "$t/home/mnt" || fail "not mounted"
  grep " $t/home/mnt " /proc/mounts | grep -q "user_id=$uid," || fail "not the user's mount: $(grep " $t/home/mnt " /proc/mounts)"
  as_user cmp "$t/home/mnt/disk.raw" "$t/home/vm.raw" || fail "the user reads other bytes than qemu-img"
  # Root is not let in without allow_other: the mount is the user's.
  ! cat "$t/home/mnt/disk.raw" >/dev/null 2>&1 || fail "root read a mount made without allow_other"
  dd if=/dev/zero bs=64k count=1 2>/dev/null | tr '\0' '\303' > "$t/pattern"
  chmod 0644 "$t/pattern"
  as_user dd if="$t/pattern" of="$t/home/mnt/disk.raw" bs=64k seek=32 conv=notrunc,fsync status=none \
    || fail "the user cannot write disk.raw"
  as_user fusermount3 -u "$t/home/mnt" || fail "the user cannot unmount"
  wait_unmounted "$t/home/mnt" || fail "vdiskfs still serves after fusermount3 -u"
  qemu-img check -q "$t/home/vm.qcow2" || fail "qemu-img check after the user's write"
  local out; out=$(qemu-io -f qcow2 -c "read -q -P 0xc3 2M 64k" -c "read -q -P 0x5a 0 1M" "$t/home/vm.qcow2" 2>&1) \
    && [ -z "$out" ] || fail "the user's write is not in the image: $out"
  [ "$(stat -c %a /dev/fuse)" = 666 ] || fail "/dev/fuse changed under the test"
}

passed=0 failed=0
fuse_mode=$(stat -c %a /dev/fuse)
for name in "${TESTS[@]}"; do
  start=$(date +%s)
  ( set -eo pipefail; "test_$name" )
  status=$?
  if [ $status -eq 0 ]; then
    echo "install test $name: passed ($(( $(date +%s) - start )) s)"; passed=$((passed + 1))
  else
    echo "install test $name: FAILED"; failed=$((failed + 1))
  fi
done
if [ "$(stat -c %a /dev/fuse)" != "$fuse_mode" ]; then
  echo "install-tests: /dev/fuse's mode was $fuse_mode and is $(stat -c %a /dev/fuse)"; failed=$((failed + 1))
fi
echo "install-tests: $passed passed, $failed failed"
[ $failed -eq 0 ]
