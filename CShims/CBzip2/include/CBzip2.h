#ifndef CBZIP2_H
#define CBZIP2_H
#include <stddef.h>

/// Decompresses one bzip2 stream (a DMG UDBZ chunk) from `src` into `dst`. Returns the number of
/// bytes written when the stream ended having filled at most `dst_len` bytes, -1 when the data is
/// corrupt or the input ran out before the stream's end, and -2 when the stream would produce
/// more than `dst_len` bytes (a decompression bomb: it stops there). Wraps BZ2_bzDecompress so
/// that callers need not manage bz_stream from Swift.
long cbzip2_decompress(const void *src, size_t src_len, void *dst, size_t dst_len);
#endif
