#include "CZstd.h"
#include <zstd.h>

long czstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len) {
    ZSTD_DCtx *ctx = ZSTD_createDCtx();
    if (!ctx) return -1;
    ZSTD_inBuffer in = { src, src_len, 0 };
    ZSTD_outBuffer out = { dst, dst_len, 0 };
    long result = -1;
    for (;;) {
        size_t ret = ZSTD_decompressStream(ctx, &out, &in);
        if (ZSTD_isError(ret)) break;
        if (ret == 0 || out.pos == out.size) { result = (long)out.pos; break; }
        if (in.pos == in.size) { result = (long)out.pos; break; }  /* input ran out */
    }
    ZSTD_freeDCtx(ctx);
    return result;
}
