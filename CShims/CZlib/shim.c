#include "CZlib.h"
#include <libdeflate.h>
#include <pthread.h>
#include <string.h>

// libdeflate decodes a whole buffer 2-3x faster than zlib's streaming inflate. Its decompressor
// is not thread-safe and costs an allocation, so each thread keeps one (freed at thread exit).
static pthread_key_t czlib_decompressor_key;
static pthread_once_t czlib_decompressor_once = PTHREAD_ONCE_INIT;
static int czlib_decompressor_key_ok = 0;

static void czlib_free_decompressor(void *d) { libdeflate_free_decompressor(d); }

static void czlib_make_key(void) {
    czlib_decompressor_key_ok = pthread_key_create(&czlib_decompressor_key, czlib_free_decompressor) == 0;
}

static struct libdeflate_decompressor *czlib_thread_decompressor(void) {
    pthread_once(&czlib_decompressor_once, czlib_make_key);
    if (!czlib_decompressor_key_ok) return NULL;
    struct libdeflate_decompressor *d = pthread_getspecific(czlib_decompressor_key);
    if (d == NULL) {
        d = libdeflate_alloc_decompressor();
        if (d != NULL && pthread_setspecific(czlib_decompressor_key, d) != 0) {
            libdeflate_free_decompressor(d);
            d = NULL;
        }
    }
    return d;
}

// The fast path answers only when the stream ends having filled `dst` exactly, the one case
// where both libraries must agree. Anything else (a stream longer or shorter than `dst`, bad
// data, which zlib may never reach once `dst` is full) goes to zlib, whose statuses the callers
// interpret as QEMU does.
static int czlib_inflate_fast(const void *src, size_t src_len, void *dst, size_t dst_len,
                              int window_bits) {
    struct libdeflate_decompressor *d = czlib_thread_decompressor();
    if (d == NULL) return 0;
    size_t in_used = 0, out_made = 0;
    enum libdeflate_result r;
    if (window_bits < 0) {
        r = libdeflate_deflate_decompress_ex(d, src, src_len, dst, dst_len, &in_used, &out_made);
    } else if (window_bits >= 8 && window_bits <= 15) {
        r = libdeflate_zlib_decompress_ex(d, src, src_len, dst, dst_len, &in_used, &out_made);
    } else {
        return 0;
    }
    return r == LIBDEFLATE_SUCCESS && out_made == dst_len;
}

int czlib_inflate(const void *src, size_t src_len, void *dst, size_t dst_len, int window_bits,
                  size_t *produced) {
    if (czlib_inflate_fast(src, src_len, dst, dst_len, window_bits)) {
        *produced = dst_len;
        return Z_STREAM_END;
    }
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
