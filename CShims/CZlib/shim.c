#include "CZlib.h"
#include <string.h>

int czlib_inflate(const void *src, size_t src_len, void *dst, size_t dst_len, int window_bits,
                  size_t *produced) {
    z_stream s;
    memset(&s, 0, sizeof s);
    *produced = 0;
    int ret = inflateInit2(&s, window_bits);
    if (ret != Z_OK) return ret;
    s.next_in = (Bytef *)src;
    s.avail_in = (uInt)src_len;
    s.next_out = (Bytef *)dst;
    s.avail_out = (uInt)dst_len;
    ret = inflate(&s, Z_FINISH);
    *produced = dst_len - s.avail_out;
    inflateEnd(&s);
    return ret;
}

int czlib_deflate(const void *src, size_t src_len, void *dst, size_t dst_len, int window_bits,
                  int level, size_t *produced) {
    z_stream s;
    memset(&s, 0, sizeof s);
    *produced = 0;
    int ret = deflateInit2(&s, level, Z_DEFLATED, window_bits, 9, Z_DEFAULT_STRATEGY);
    if (ret != Z_OK) return ret;
    s.next_in = (Bytef *)src;
    s.avail_in = (uInt)src_len;
    s.next_out = (Bytef *)dst;
    s.avail_out = (uInt)dst_len;
    ret = deflate(&s, Z_FINISH);
    *produced = dst_len - s.avail_out;
    deflateEnd(&s);
    return ret;
}
