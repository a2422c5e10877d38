#ifndef CZSTD_H
#define CZSTD_H
#include <stddef.h>

/// Decompresses one zstd stream (qcow2 compression_type 1) from `src` into `dst`, stopping when
/// `dst` is full or the frame ends (the input length is only an upper bound). Returns the number
/// of bytes written, or -1 on a corrupt stream. Wraps ZSTD_decompressStream so that callers need
/// not manage ZSTD_DCtx and its buffer structs from Swift.
long czstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len);
#endif
