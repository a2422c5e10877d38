#include "CLzma.h"
#include <lzma.h>

long clzma_decompress(const void *src, size_t src_len, void *dst, size_t dst_len, unsigned long long memlimit) {
    lzma_stream s = LZMA_STREAM_INIT;
    /* The .xz container only (not lzma_auto_decoder, which also takes .lzma and lzip). */
    if (lzma_stream_decoder(&s, memlimit, 0) != LZMA_OK) return -1;
    s.next_in = src;
    s.avail_in = src_len;
    s.next_out = dst;
    s.avail_out = dst_len;
    long result = -1;
    for (;;) {
        lzma_ret ret = lzma_code(&s, LZMA_FINISH);
        if (ret == LZMA_STREAM_END) { result = (long)(dst_len - s.avail_out); break; }
        if (ret != LZMA_OK) {
            /* LZMA_BUF_ERROR with no room left: the stream is longer than the chunk. */
            if (ret == LZMA_BUF_ERROR && s.avail_out == 0) result = -2;
            break;
        }
        if (s.avail_out == 0) {
            unsigned char extra;
            s.next_out = &extra;
            s.avail_out = 1;
            ret = lzma_code(&s, LZMA_FINISH);
            result = (ret == LZMA_STREAM_END && s.avail_out == 1) ? (long)dst_len : -2;
            if (ret != LZMA_OK && ret != LZMA_STREAM_END && ret != LZMA_BUF_ERROR) result = -1;
            break;
        }
    }
    lzma_end(&s);
    return result;
}
