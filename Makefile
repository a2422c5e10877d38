# vdiskfs — build, test, demo. Every target installs what it needs on Debian 12 first.
SHELL := /bin/bash
PREFIX ?= /usr/local
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH):/usr/sbin:/sbin

# Debian packages the build, the tests and the demo need.
DEBS := libfuse3-dev fuse3 zlib1g-dev libdeflate-dev libzstd-dev pkg-config qemu-utils qemu-system-common \
        fio gdisk fdisk dosfstools e2fsprogs xfsprogs util-linux
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build release test lint format demo install uninstall bench clean

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
# under CI=true a skipped test is a failure), then the formatter in lint mode.
test: deps
	$(SWIFT) build --build-tests
	@set -o pipefail; log=$$(mktemp); \
	VDISKFS_BIN=$$($(SWIFT) build --show-bin-path)/vdiskfs $(SWIFT) test --skip-build 2>&1 | tee $$log; status=$$?; \
	if [ -n "$$CI" ] && grep -Eq '(Test .* skipped|[1-9][0-9]* tests? skipped)' $$log; then \
	  echo "make test: tests were skipped under CI; every test must run here"; status=1; fi; \
	rm -f $$log; \
	left=$$(awk '$$3 ~ /^fuse/ && $$2 ~ /vdiskfs-/ {print $$2}' /proc/mounts); \
	if [ -n "$$left" ]; then echo "make test: mounts left behind: $$left"; status=1; fi; \
	exit $$status
	$(MAKE) --no-print-directory lint

lint:
	$(SWIFT) format lint --strict -r Sources Tests

format:
	$(SWIFT) format -i -r Sources Tests

# Builds, makes a qcow2 holding a GPT disk with an ext4 partition, mounts it with vdiskfs,
# attaches the partition from disk.raw to a loop device, mounts it and reads a file.
demo: release
	$(SUDO) scripts/demo.sh "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs"

install: release
	$(SUDO) install -m 0755 "$$($(SWIFT) build -c release --show-bin-path)/vdiskfs" $(PREFIX)/bin/vdiskfs

uninstall:
	$(SUDO) rm -f $(PREFIX)/bin/vdiskfs

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

clean:
	rm -rf .build
