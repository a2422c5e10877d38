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

/// `SEEK_DATA` / `SEEK_HOLE` are defined by <unistd.h> only under `_GNU_SOURCE`, which Swift's
/// Glibc module does not set; exposed as constants (the swift-nio CNIOLinux way).
extern const int cfuse_seek_data;
extern const int cfuse_seek_hole;

/// Where formatted libfuse log lines go: `message` is one line without its trailing newline,
/// valid only during the call.
typedef void (*cfuse_log_sink)(enum fuse_log_level level, const char *message);

/// libfuse's log hook (`fuse_set_log_func`) hands over a printf format and a `va_list`; Swift
/// cannot call a C varargs formatter portably, so a C trampoline `vsnprintf`s each message into a
/// stack buffer and passes the text to `sink`. libfuse's hook is process-wide, so the sink is too
/// (stored atomically). Passing NULL restores libfuse's default (stderr).
void cfuse_set_log_sink(cfuse_log_sink sink);

#ifdef __cplusplus
}
#endif

#endif  // CFUSE_H
