#!/usr/bin/env python3
"""Writes SIZE_MB MiB of deterministic, roughly 50 %-compressible data with no zero block to stdout.

Each 64 KiB block is 32 KiB of AES-128-CTR keystream (read from stdin: `openssl enc` over
/dev/zero with a fixed key and IV) followed by 32 KiB of a pattern naming the block.
Usage: openssl enc -aes-128-ctr -K ... -iv ... -nosalt < /dev/zero | gen-data.py SIZE_MB > disk.raw
"""
import sys

size_mb = int(sys.argv[1])
block = 65536
half = block // 2
src, out = sys.stdin.buffer, sys.stdout.buffer
for i in range(size_mb * 16):
    noise = src.read(half)
    if len(noise) != half:
        sys.exit("short keystream")
    pattern = (b"vdiskfs-block-%016d|\n" % i) * (half // 32)
    out.write(noise + pattern)
