#ifndef CZLIB_H
#define CZLIB_H
#include <stddef.h>
#include <zlib.h>

/// One-shot inflate of `src` into `dst` (zlib's init functions are macros Swift cannot call).
/// `window_bits` is passed to inflateInit2: -12..-15 for raw deflate (qcow2), 15 for a zlib
/// header (VMDK grains). Stops when `dst` is full or the stream ends; `*produced` receives the
/// number of bytes written. Returns the zlib status (Z_STREAM_END, Z_OK, Z_BUF_ERROR, or an error).
int czlib_inflate(const void *src, size_t src_len, void *dst, size_t dst_len, int window_bits,
                  size_t *produced);

/// One-shot deflate for tests and (later) compressed writes; raw deflate when `window_bits` < 0.
/// Returns Z_STREAM_END on success; `*produced` receives the compressed length.
int czlib_deflate(const void *src, size_t src_len, void *dst, size_t dst_len, int window_bits,
                  int level, size_t *produced);
#endif
