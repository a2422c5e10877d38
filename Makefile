# vdiskfs — build, test, demo. Every target installs what it needs on Debian 12 first.
SHELL := /bin/bash
PREFIX ?= /usr/local
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH):/usr/sbin:/sbin

# Debian packages the build, the tests and the demo need (systemd for systemd-analyze, jq and
# man-db for the man page, dpkg-dev, binutils (strip) and lintian for `make deb`, passwd for the
# unprivileged test, cloop-utils (create_compressed_fs) for the cloop fixtures).
DEBS := libfuse3-dev fuse3 zlib1g-dev libdeflate-dev libzstd-dev libbz2-dev liblzma-dev libcurl4-openssl-dev nginx-light pkg-config qemu-utils qemu-system-common cloop-utils dmg2img \
        fio gdisk fdisk dosfstools e2fsprogs xfsprogs util-linux \
        systemd jq man-db dpkg-dev binutils lintian passwd \
        ceph-mon ceph-osd radosgw ceph-common librbd-dev librados-dev curl python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# `vdiskfs --version`: the version in Sources/vdiskfs/BuildInfo.swift and the commit, which
# Package.swift passes to CShims/CBuildInfo (a plain `swift build` says the commit is unknown).
VERSION := $(shell sed -n 's/^ *static let packageVersion = "\(.*\)"/\1/p' Sources/vdiskfs/BuildInfo.swift)
export VDISKFS_GIT_COMMIT := $(shell git describe --always --dirty --abbrev=12 --exclude='*' 2>/dev/null)

# Install layout; DESTDIR stages it (make deb: PREFIX=/usr and Debian's places).
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/vdiskfs
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
INSTALL := $(if $(DESTDIR),,$(SUDO)) install

# What is installed and packaged: the release binary with the Swift runtime linked in (it runs
# without a Swift toolchain), built in its own folder so that `make release` keeps its binary.
STATIC := .build-static
STATIC_BIN = $(STATIC)/release/vdiskfs
GEN := $(STATIC)/share
EXAMPLES := systemd/mnt-vm.mount systemd/mnt-vm.automount systemd/fstab.example systemd/mnt-vm.conf.example

.PHONY: all deps build release static man test test-uring test-install crashtest lint format demo install uninstall deb bench bench-remote bench-transport bench-workload bench-ova fuzz fuzz-short sanitize sanitize-short clean

all: build

# Install only what is missing (dpkg-query is fast; apt-get update only when needed).
deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "Swift 6 toolchain not found (expected at /opt/swift)"; exit 1; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# All tests, the FUSE mount and loop-device tests included (they need root and /dev/fuse;
# under CI=true a skipped test is a failure; the crash campaign at 3 points per format; two test
# processes at once, scripts/test-shards.sh), then the
# install tests, every fuzz target for a few seconds, the parser, engine and FUSE suites under
# AddressSanitizer and the concurrency suites under ThreadSanitizer, and the formatter in lint
# mode.
test: deps
	$(SWIFT) build --build-tests
	@log=$$(mktemp); bin=$$($(SWIFT) build --show-bin-path); \
	VDISKFS_BIN=$$bin/vdiskfs scripts/test-shards.sh $$bin $$log; status=$$?; \
	if [ -n "$$CI" ] && grep -Eq '(Test .* skipped|[1-9][0-9]* tests? skipped)' $$log; then \
	  echo "make test: tests were skipped under CI; every test must run here"; status=1; fi; \
	rm -f $$log; \
	left=$$(awk '$$3 ~ /^fuse/ && $$2 ~ /vdiskfs-/ {print $$2}' /proc/mounts); \
	if [ -n "$$left" ]; then echo "make test: mounts left behind: $$left"; status=1; fi; \
	for i in $$(seq 50); do left=$$(pgrep -af '/tmp/vdiskfs[-]' || true); [ -z "$$left" ] && break; sleep 0.1; done; \
	if [ -n "$$left" ]; then echo "make test: processes left behind (Ceph, nginx, vdiskfs): $$left"; status=1; fi; \
	exit $$status
	$(MAKE) --no-print-directory test-uring
	@# Side by side (each one's output printed whole when it ends): the release build and the
	@# package tests of the one, the libFuzzer processes of the other, leave each other's idle
	@# moments to use.
	$(MAKE) --no-print-directory -j2 --output-sync=target test-install fuzz-short
	$(MAKE) --no-print-directory sanitize-short
	$(MAKE) --no-print-directory lint

# The FUSE mount matrix a second time over FUSE-over-io_uring (issue 19): the fuse module's
# enable_uring switched on for the run (every mount's default io_uring=auto then takes it) and
# back to its previous value whatever happens. Reads of every format, writes, fallocate, SEEK, the
# view tree with its partitions, the page cache; IOURingMountTests proves the rings carry them.
# Suite names are anchored to their module: a bare `WriteMountTests` would also match every
# format's own write-mount suite, which tests the format, not the transport.
URING_SUITES := vdiskfsTests.MountMatrixTests vdiskfsTests.WriteMountTests vdiskfsTests.ViewTreeTests \
  vdiskfsTests.SparseTests vdiskfsTests.PageCacheTests vdiskfsTests.RawWriteTests \
  VDiskFUSETests.ReadWriteMountTests vdiskfsTests.IOURingMountTests
test-uring:
	@param=/sys/module/fuse/parameters/enable_uring; \
	if [ ! -w $$param ]; then echo "make test-uring: $$param is missing or not writable"; exit 1; fi; \
	prev=$$(cat $$param); trap "echo $$prev > $$param" EXIT; echo Y > $$param; \
	set -o pipefail; log=$$(mktemp); \
	VDISKFS_BIN=$$($(SWIFT) build --show-bin-path)/vdiskfs $(SWIFT) test --skip-build \
	  $(foreach s,$(URING_SUITES),--filter '^$(subst .,\.,$(s))/') 2>&1 | tee $$log; status=$$?; \
	if [ -n "$$CI" ] && grep -Eq '(Test .* skipped|[1-9][0-9]* tests? skipped)' $$log; then \
	  echo "make test-uring: tests were skipped under CI"; status=1; fi; \
	rm -f $$log; exit $$status

# Installing and running it as a system tool (issue 14): the units verify, make install and
# uninstall, the man page and completions, the mount helper and fstab, the Debian package
# installed, used and purged, an unprivileged user's mount. Changes the system and undoes it.
test-install: deps static man
	$(SUDO) env PATH="$$PATH" VERSION="$(VERSION)" VDISKFS_GIT_COMMIT="$(VDISKFS_GIT_COMMIT)" \
	  packaging/test-install.sh "$(STATIC_BIN)" "$(GEN)"

# The crash campaign (issue 17): POINTS (50) kill -9 crash points per writable format (qcow2, vmdk,
# vhdx, vpc, vdi, raw) under a seeded mixed write/fsync/discard load, each judged by QEMU and by
# the fsync'd data (Tests/vdiskfsTests/CrashCampaignMountTests.swift), then a table of figures
# per format. SEED (1700: point i has seed SEED+i) and FORMATS (comma list) override.
crashtest: deps
	$(SWIFT) build --build-tests
	@set -o pipefail; log=$$(mktemp); \
	VDISKFS_BIN=$$($(SWIFT) build --show-bin-path)/vdiskfs VDISKFS_REQUIRE_MOUNT_TESTS=1 \
	  VDISKFS_CRASH_POINTS="$(or $(POINTS),50)" VDISKFS_CRASH_SEED="$(or $(SEED),1700)" VDISKFS_CRASH_FORMATS="$(FORMATS)" \
	  $(SWIFT) test --skip-build --filter CrashCampaignMountTests 2>&1 | tee $$log; status=$$?; \
	echo; awk 'BEGIN { printf "%-6s %6s %6s %5s %9s %9s %11s %5s %6s %9s %8s\n", "format", "points", "failed", \
	    "idle", "mid-write", "mid-fsync", "mid-discard", "ops", "fsyncs", "ack MiB", "seconds" } \
	  /crash campaign: format=/ { delete f; for (i = 3; i <= NF; i++) { split($$i, kv, "="); f[kv[1]] = kv[2] } \
	    printf "%-6s %6d %6d %5d %9d %9d %11d %5d %6d %9.1f %8.1f\n", f["format"], f["points"], f["failed"], \
	      f["idle"], f["mid-write"], f["mid-fsync"], f["mid-discard"], f["operations"], f["fsyncs"], \
	      f["acknowledged-bytes"] / 1048576, f["seconds"] }' $$log; \
	rm -f $$log; \
	left=$$(awk '$$3 ~ /^fuse/ && $$2 ~ /vdiskfs-crash-/ {print $$2}' /proc/mounts); \
	if [ -n "$$left" ]; then echo "make crashtest: mounts left behind: $$left"; status=1; fi; \
	exit $$status

lint:
	$(SWIFT) format lint --strict -r Sources Tests Fuzz/Package.swift Fuzz/Sources/Fuzz*

format:
	$(SWIFT) format -i -r Sources Tests Fuzz/Package.swift Fuzz/Sources/Fuzz*

# Builds, makes a qcow2 holding a GPT disk with an ext4 partition, mounts it with vdiskfs,
# attaches the partition from disk.raw to a loop device, mounts it and reads a file.
demo: release
	$(SUDO) scripts/demo.sh "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs"

static: deps
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(STATIC) --product vdiskfs

# The man page (generated from the parser's own description, packaging/manpage.sh) and the
# completions (the parser's --generate-completion-script), for PREFIX's paths.
man: static
	@mkdir -p $(GEN)
	packaging/manpage.sh $(STATIC_BIN) $(UNITDIR) $(DOCDIR) > $(GEN)/vdiskfs.1
	$(STATIC_BIN) --generate-completion-script bash | sed '1{/^#!/d}' > $(GEN)/vdiskfs.bash
	$(STATIC_BIN) --generate-completion-script zsh > $(GEN)/_vdiskfs
	$(STATIC_BIN) --generate-completion-script fish > $(GEN)/vdiskfs.fish

install: man
	$(INSTALL) -D -m 0755 $(STATIC_BIN) $(DESTDIR)$(BINDIR)/vdiskfs
	$(INSTALL) -D -m 0644 $(GEN)/vdiskfs.1 $(DESTDIR)$(MANDIR)/man1/vdiskfs.1
	$(INSTALL) -D -m 0644 $(GEN)/vdiskfs.bash $(DESTDIR)$(BASHCOMPDIR)/vdiskfs
	$(INSTALL) -D -m 0644 $(GEN)/_vdiskfs $(DESTDIR)$(ZSHCOMPDIR)/_vdiskfs
	$(INSTALL) -D -m 0644 $(GEN)/vdiskfs.fish $(DESTDIR)$(FISHCOMPDIR)/vdiskfs.fish
	sed 's|/usr/bin/vdiskfs|$(BINDIR)/vdiskfs|' systemd/vdiskfs@.service > $(GEN)/vdiskfs@.service
	$(INSTALL) -D -m 0644 $(GEN)/vdiskfs@.service $(DESTDIR)$(UNITDIR)/vdiskfs@.service
	$(INSTALL) -d $(DESTDIR)$(DOCDIR)/examples
	$(INSTALL) -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/

uninstall:
	$(if $(DESTDIR),,$(SUDO)) rm -f $(DESTDIR)$(BINDIR)/vdiskfs $(DESTDIR)$(MANDIR)/man1/vdiskfs.1 \
	  $(DESTDIR)$(BASHCOMPDIR)/vdiskfs $(DESTDIR)$(ZSHCOMPDIR)/_vdiskfs $(DESTDIR)$(FISHCOMPDIR)/vdiskfs.fish \
	  $(DESTDIR)$(UNITDIR)/vdiskfs@.service $(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(notdir $(EXAMPLES)))
	-$(if $(DESTDIR),,$(SUDO)) rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null

# vdiskfs_VERSION_ARCH.deb: make install into a staging root with Debian's paths, the binary
# stripped, Depends computed by dpkg-shlibdeps (plus fuse3 for fusermount3 and mount.fuse3),
# then lintian. Installs with `apt install ./vdiskfs_*.deb` where no Swift toolchain is.
deb: deps
	VERSION="$(VERSION)" packaging/build-deb.sh

# Fuzz/ (libFuzzer + AddressSanitizer): one target per format parser, partition tables, VMDK
# descriptors and whole chains, seeded with images qemu-img and the tests make; each runs
# FUZZ_SECONDS (60). scripts/fuzz.sh says more.
fuzz: deps
	scripts/fuzz.sh

# What `make test` runs: every fuzz target for a few seconds from fresh seeds, in a debug build
# (a third of the release build's time); any finding fails it.
fuzz-short: deps
	FUZZ_CONFIG=debug FUZZ_SECONDS=$(or $(FUZZ_SECONDS),3) scripts/fuzz.sh

# What `make test` runs under the sanitizers (about 1 minute once built). AddressSanitizer: the
# hostile-image suites of every format, the engine and its caches, the FUSE adapter with its
# mounts, the untrusted-image mounts and the fuzz replay. ThreadSanitizer: the engine's
# concurrency and write-safety suites, the table caches, the FUSE adapter with its mounts, and
# daemonized (forked) mounts: readers from several processes, fio random writes, systemd's notify
# socket.
SANITIZE_SHORT := VDiskCoreTests|FuzzReplayTests|QCOW2Tests.HostileImageTests|HostileVHDXTests|VMDKHostileTests|VHDHostileTests|VDIHostileTests|EngineWriteTests|LoggingAndConcurrencyTests|VDiskFUSETests|UntrustedImage
SANITIZE_SHORT_TSAN := VDiskFUSETests|LoggingAndConcurrencyTests|ReadersAndWriterTests|WriteSafetyTests|EngineWriteTests|TableCache|vdiskfsTests.ConcurrencyTests|SystemdNotifyTests|fioRandomWriteVerifies
sanitize-short: deps
	$(MAKE) --no-print-directory sanitize SANITIZERS=address SANITIZE_FILTER='$(SANITIZE_SHORT)'
	$(MAKE) --no-print-directory sanitize SANITIZERS=thread SANITIZE_FILTER='$(SANITIZE_SHORT_TSAN)'

# The test suite, mount tests included (their daemon is the sanitized build too), under
# AddressSanitizer (with LeakSanitizer) and under ThreadSanitizer, each in its own build folder
# (.build-asan, .build-tsan). Any report fails, a detached daemon's too. SANITIZERS (default
# "address thread"), SANITIZE_FILTER and SANITIZE_SKIP (regexes for swift test --filter/--skip)
# pick a subset; scripts/sanitize.sh says more, scripts/sanitizers/ holds the suppressions.
SANITIZERS ?= address thread
sanitize: deps
	SWIFT="$(SWIFT)" SANITIZERS="$(SANITIZERS)" SANITIZE_FILTER="$(SANITIZE_FILTER)" \
	  SANITIZE_SKIP="$(SANITIZE_SKIP)" scripts/sanitize.sh

# Benchmarks/bench.sh (issue 6): vdiskfs vs qemu-storage-daemon vs the libyal mount tools vs the
# raw file; sequential and random reads of qcow2 (plain, compressed, chain), vmdk, vhdx, vpc, vdi;
# qcow2 writes; RSS; mount latency; micro benchmarks and a callgrind count of the hot path.
# Results in Benchmarks/results/. QUICK=1, SIZE_MB, RUNS, FIO_TIME, FORMATS override.
bench: release
	@missing=$$(for p in fio libqcow-utils libvmdk-utils libvhdi-utils valgrind binutils openssl python3; do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(SUDO) env PATH="$$PATH" QUICK="$(QUICK)" SIZE_MB="$(SIZE_MB)" RUNS="$(RUNS)" FIO_TIME="$(FIO_TIME)" \
	  FORMATS="$(FORMATS)" Benchmarks/bench.sh "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs"
	@if [ "$(TRANSPORT)" != 0 ]; then $(MAKE) --no-print-directory bench-transport; fi
	@if [ "$(WORKLOAD)" != 0 ]; then $(MAKE) --no-print-directory bench-workload; fi
	@if [ "$(REMOTE)" != 0 ]; then $(MAKE) --no-print-directory bench-remote; fi
	@if [ "$(OVA)" != 0 ]; then $(MAKE) --no-print-directory bench-ova; fi

# The FUSE transports (issue 19): classic /dev/fuse loop vs FUSE-over-io_uring vs passthrough vs
# the raw file in the page cache, on qcow2 and vhdx. `make bench TRANSPORT=0` skips it.
bench-transport: release
	@command -v fio >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq fio; }
	$(SUDO) env PATH="$$PATH" QUICK="$(QUICK)" RUNS="$(RUNS)" FIO_TIME="$(FIO_TIME)" \
	  Benchmarks/transport-bench.sh "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs"

# A real workload (issue 19): ext4 with ~30 k files inside a qcow2, through a loop device on
# disk.raw: tar of the tree and 4 KiB random reads in a file, against qemu-storage-daemon and the
# same ext4 on the raw file. `make bench WORKLOAD=0` skips it.
bench-workload: release
	@command -v fio >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq fio; }
	$(SUDO) env PATH="$$PATH" QUICK="$(QUICK)" RUNS="$(RUNS)" FIO_TIME="$(FIO_TIME)" \
	  Benchmarks/workload-bench.sh "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs"

# Appliances (issue 20): dd of a 1 GiB disk read in place from its .ova (streamOptimized VMDK)
# against `tar xf` of the archive and a mount of the extracted VMDK. `make bench OVA=0` skips it.
bench-ova: release
	$(SUDO) env PATH="$$PATH" QUICK="$(QUICK)" RUNS="$(RUNS)" \
	  Benchmarks/ova-bench.sh "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs"

# Remote images (issue 18): S3 (radosgw), HTTP (nginx) and RBD on 127.0.0.1 against
# qemu-storage-daemon's curl and rbd drivers and the local file. `make bench REMOTE=0` skips it.
bench-remote: release
	@missing=$$(for p in fio qemu-block-extra openssl; do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(SUDO) env PATH="$$PATH" QUICK="$(QUICK)" SIZE_MB="$(SIZE_MB)" RUNS="$(RUNS)" FIO_TIME="$(FIO_TIME)" \
	  Benchmarks/remote-bench.sh "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs"

clean:
	rm -rf .build $(STATIC) .build-asan .build-tsan vdiskfs_*.deb
