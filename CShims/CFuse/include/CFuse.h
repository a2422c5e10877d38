// libfuse3's low-level API for Swift, plus the few helpers Swift cannot express itself.
//
// FUSE_USE_VERSION 312: below it `fuse_session_loop_mt` is a function-like macro Swift cannot
// see and `struct fuse_loop_config` is the old public struct. The `fuse3/` include prefix
// matters: a C target's -I flags do not reach the Swift importer of dependent targets.
#ifndef CFUSE_H
#define CFUSE_H

#define FUSE_USE_VERSION 312

#include <stdarg.h>
#include <stddef.h>
#include <fuse3/fuse_lowlevel.h>

#ifdef __cplusplus
extern "C" {
#endif

/// `FUSE_ARGS_INIT(argc, argv)` is a macro; Swift needs a function. The returned args are not
/// `allocated`: the caller owns `argv`.
struct fuse_args cfuse_args_init(int argc, char **argv);

// Linux constants (SEEK_DATA, O_DIRECT, FALLOC_FL_*) come from CShims/CLinux, shared with
// VDiskCore.

/// Where formatted libfuse log lines go: `message` is one line without its trailing newline,
/// valid only during the call.
typedef void (*cfuse_log_sink)(enum fuse_log_level level, const char *message);

/// libfuse's log hook (`fuse_set_log_func`) hands over a printf format and a `va_list`; Swift
/// cannot call a C varargs formatter portably, so a C trampoline `vsnprintf`s each message into a
/// stack buffer and passes the text to `sink`. libfuse's hook is process-wide, so the sink is too
/// (stored atomically). Passing NULL restores libfuse's default (stderr).
void cfuse_set_log_sink(cfuse_log_sink sink);

/// One piece of a read reply: `size` bytes of file `fd` at `offset`, or (`fd` < 0) `size` zero
/// bytes.
struct cfuse_piece {
  int fd;
  off_t offset;
  size_t size;
};

/// The most pieces `cfuse_reply_pieces` takes.
#define CFUSE_MAX_PIECES 64

/// Replies to a read with `pieces` through `fuse_reply_data`: with `FUSE_CAP_SPLICE_WRITE` the
/// file ranges are spliced into /dev/fuse (one copy in the kernel instead of `pread` into a
/// buffer and `writev` out of it). Zero pieces come from a static zero buffer, so their total
/// must not exceed `cfuse_zero_bytes`. Returns libfuse's result (0 or a negative errno).
int cfuse_reply_pieces(fuse_req_t req, const struct cfuse_piece *pieces, size_t count);
extern const size_t cfuse_zero_bytes;

/// The largest pipe this process can make, up to `limit` bytes (0 when it cannot make one):
/// libfuse splices a reply only through a pipe that holds it plus a page per piece and two
/// more, and `/proc/sys/fs/pipe-max-size` (1 MiB) binds processes without CAP_SYS_RESOURCE.
size_t cfuse_pipe_capacity(size_t limit);

/// Replies to an open with `fh` and the kernel's `FOPEN_*` bits in `open_flags` as given, which
/// lets us set bits libfuse 3.14's `fuse_file_info` has no field for (FOPEN_PARALLEL_DIRECT_WRITES,
/// kernel 6.2). The reply is `struct fuse_open_out` of the kernel ABI (layout checked with
/// `_Static_assert`s in shim.c).
int cfuse_reply_open_flags(fuse_req_t req, uint64_t fh, uint32_t open_flags);
#define CFUSE_FOPEN_DIRECT_IO (1u << 0)
#define CFUSE_FOPEN_KEEP_CACHE (1u << 1)
#define CFUSE_FOPEN_NOFLUSH (1u << 5)
#define CFUSE_FOPEN_PARALLEL_DIRECT_WRITES (1u << 6)

#ifdef __cplusplus
}
#endif

#endif  // CFUSE_H
