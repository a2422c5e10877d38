// fuse_common.h uses NULL without including <stddef.h>: include it first.
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>
// The kernel's FUSE ABI (uapi), only to check the mirror below against it.
#include <linux/fuse.h>

#include "CFuse.h"

struct fuse_args cfuse_args_init(int argc, char **argv) {
  struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
  return args;
}

static _Atomic(cfuse_log_sink) cfuse_current_sink = NULL;

static void cfuse_log_trampoline(enum fuse_log_level level, const char *fmt, va_list ap) {
  cfuse_log_sink sink = atomic_load(&cfuse_current_sink);
  if (sink == NULL) return;
  char buffer[1024];
  int n = vsnprintf(buffer, sizeof buffer, fmt, ap);
  if (n < 0) return;
  size_t length = strnlen(buffer, sizeof buffer);
  while (length > 0 && (buffer[length - 1] == '\n' || buffer[length - 1] == '\r')) buffer[--length] = '\0';
  sink(level, buffer);
}

void cfuse_set_log_sink(cfuse_log_sink sink) {
  atomic_store(&cfuse_current_sink, sink);
  fuse_set_log_func(sink == NULL ? NULL : cfuse_log_trampoline);
}

// 1 MiB of zeros (bss: costs no memory until read, and reads map the zero page).
static const char cfuse_zeros[1 << 20];
const size_t cfuse_zero_bytes = sizeof cfuse_zeros;

int cfuse_reply_pieces(fuse_req_t req, const struct cfuse_piece *pieces, size_t count) {
  if (count == 0 || count > CFUSE_MAX_PIECES) return fuse_reply_buf(req, NULL, 0);
  // struct fuse_bufvec ends in a one-element array: room for CFUSE_MAX_PIECES buffers.
  union {
    struct fuse_bufvec vec;
    char room[sizeof(struct fuse_bufvec) + (CFUSE_MAX_PIECES - 1) * sizeof(struct fuse_buf)];
  } storage;
  memset(&storage, 0, sizeof storage);
  struct fuse_bufvec *vec = &storage.vec;
  vec->count = count;
  for (size_t i = 0; i < count; i++) {
    struct fuse_buf *b = &vec->buf[i];
    b->size = pieces[i].size;
    if (pieces[i].fd >= 0) {
      b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
      b->fd = pieces[i].fd;
      b->pos = pieces[i].offset;
    } else {
      b->mem = (void *)cfuse_zeros;
    }
  }
  return fuse_reply_data(req, vec, FUSE_BUF_SPLICE_MOVE);
}

size_t cfuse_pipe_capacity(size_t limit) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  size_t best = (size_t)fcntl(fds[0], F_GETPIPE_SZ);
  for (size_t size = limit; size > best; size /= 2) {
    int got = fcntl(fds[0], F_SETPIPE_SZ, (int)size);
    if (got > 0) {
      best = (size_t)got;
      break;
    }
  }
  close(fds[0]);
  close(fds[1]);
  return best;
}

// The kernel ABI's reply to FUSE_OPEN (include/uapi/linux/fuse.h, unchanged since protocol 7.1):
// `struct fuse_open_out { uint64_t fh; uint32_t open_flags; uint32_t padding; }`. Mirrored, and
// checked both against that layout and against the installed uapi header, so that a mismatch
// fails the build instead of corrupting replies.
struct cfuse_open_out {
  uint64_t fh;
  uint32_t open_flags;
  uint32_t padding;
};
_Static_assert(sizeof(struct cfuse_open_out) == 16, "fuse_open_out is 16 bytes");
_Static_assert(offsetof(struct cfuse_open_out, fh) == 0, "fuse_open_out.fh at 0");
_Static_assert(offsetof(struct cfuse_open_out, open_flags) == 8, "fuse_open_out.open_flags at 8");
_Static_assert(offsetof(struct cfuse_open_out, padding) == 12, "fuse_open_out.padding at 12");
_Static_assert(sizeof(struct cfuse_open_out) == sizeof(struct fuse_open_out), "size as <linux/fuse.h>");
_Static_assert(offsetof(struct cfuse_open_out, fh) == offsetof(struct fuse_open_out, fh), "fh");
_Static_assert(offsetof(struct cfuse_open_out, open_flags) == offsetof(struct fuse_open_out, open_flags),
               "open_flags");
_Static_assert(offsetof(struct cfuse_open_out, padding) == offsetof(struct fuse_open_out, padding), "padding");
// The FOPEN_* bits CFuse.h spells out for Swift.
_Static_assert(CFUSE_FOPEN_DIRECT_IO == FOPEN_DIRECT_IO, "FOPEN_DIRECT_IO");
_Static_assert(CFUSE_FOPEN_KEEP_CACHE == FOPEN_KEEP_CACHE, "FOPEN_KEEP_CACHE");
_Static_assert(CFUSE_FOPEN_NOFLUSH == FOPEN_NOFLUSH, "FOPEN_NOFLUSH");
#ifdef FOPEN_PARALLEL_DIRECT_WRITES  // uapi headers from Linux 6.2 on
_Static_assert(CFUSE_FOPEN_PARALLEL_DIRECT_WRITES == FOPEN_PARALLEL_DIRECT_WRITES, "FOPEN_PARALLEL_DIRECT_WRITES");
#endif

int cfuse_reply_open_flags(fuse_req_t req, uint64_t fh, uint32_t open_flags) {
  struct cfuse_open_out out = {.fh = fh, .open_flags = open_flags, .padding = 0};
  struct iovec iov = {.iov_base = &out, .iov_len = sizeof out};
  return fuse_reply_iov(req, &iov, 1);
}
