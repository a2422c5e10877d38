#ifndef CLZMA_H
#define CLZMA_H
#include <stddef.h>

/// Decompresses one .xz stream (a DMG ULMO chunk, type 0x80000008: LZMA2 in the xz container, as
/// 7-Zip's DMG handler and libyal's libmodi read it; a legacy .lzma or raw LZMA stream is
/// refused as corrupt) from `src` into `dst`, with liblzma's memory use capped at
/// `memlimit` bytes. Returns the number of bytes written when the stream ended having filled at
/// most `dst_len` bytes, -1 when the data is corrupt, truncated or needs more memory than
/// `memlimit`, and -2 when the stream would produce more than `dst_len` bytes. Wraps
/// lzma_code so that callers need not manage lzma_stream from Swift.
long clzma_decompress(const void *src, size_t src_len, void *dst, size_t dst_len, unsigned long long memlimit);
#endif
