#include "CBzip2.h"
#include <bzlib.h>
#include <limits.h>
#include <string.h>

long cbzip2_decompress(const void *src, size_t src_len, void *dst, size_t dst_len) {
    if (src_len > UINT_MAX || dst_len > UINT_MAX) return -1;
    bz_stream s;
    memset(&s, 0, sizeof s);
    if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK) return -1;
    s.next_in = (char *)src;
    s.avail_in = (unsigned)src_len;
    s.next_out = (char *)dst;
    s.avail_out = (unsigned)dst_len;
    long result = -1;
    for (;;) {
        int ret = BZ2_bzDecompress(&s);
        if (ret == BZ_STREAM_END) { result = (long)(dst_len - s.avail_out); break; }
        if (ret != BZ_OK) break;
        if (s.avail_out == 0) {
            /* Full: the stream is longer than the chunk unless it ends right here. */
            char extra;
            s.next_out = &extra;
            s.avail_out = 1;
            ret = BZ2_bzDecompress(&s);
            result = (ret == BZ_STREAM_END && s.avail_out == 1) ? (long)dst_len : (ret == BZ_OK || ret == BZ_STREAM_END) ? -2 : -1;
            break;
        }
        if (s.avail_in == 0) break; /* input ran out before the end of the stream */
    }
    BZ2_bzDecompressEnd(&s);
    return result;
}
