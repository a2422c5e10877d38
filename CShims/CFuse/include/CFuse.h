// libfuse3 for mounting only (option parsing, `fuse_session_mount`, daemonizing, unmounting), the
// kernel's FUSE ABI for the request loop vdiskfs runs itself (Sources/VDiskFUSE/Kernel), and the
// few helpers Swift cannot express itself (macros, `_GNU_SOURCE`-only calls, signal handlers).
//
// FUSE_USE_VERSION 312: the libfuse API this is written against (Benchmarks/Sources/FUSECeiling,
// a plain libfuse server, shares this target and needs 312's `fuse_session_loop_mt`). The
// `fuse3/` include prefix matters: a C target's -I flags do not reach the Swift importer of
// dependent targets.
#ifndef CFUSE_H
#define CFUSE_H

#define FUSE_USE_VERSION 312

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <semaphore.h>
#include <sys/uio.h>
#include <fuse3/fuse_lowlevel.h>
// The kernel's FUSE ABI (uapi; linux-libc-dev). Every struct the loop reads or writes is taken
// from here, never retyped in Swift; shim.c pins the sizes and offsets of the ones it uses with
// `_Static_assert`s, so a header that disagrees with protocol 7.38 fails the build.
#include <linux/fuse.h>

#if FUSE_KERNEL_VERSION != 7 || FUSE_KERNEL_MINOR_VERSION < 38
#error "vdiskfs needs <linux/fuse.h> of FUSE protocol 7.38 or later (Linux 6.2 uapi headers)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

// ---- FUSE protocol 7.40: passthrough -------------------------------------------------------
// What <linux/fuse.h> of Linux 6.9+ (include/uapi/linux/fuse.h, protocol 7.40: "add
// max_stack_depth to fuse_init_out, add FUSE_PASSTHROUGH init flag; add backing_id to
// fuse_open_out, add FOPEN_PASSTHROUGH open flag") adds and Debian 12's 7.38 header lacks.
// Values as in that file; shim.c pins the layouts with `_Static_assert`s.
#if FUSE_KERNEL_MINOR_VERSION < 40
/// INIT flag (flags2 bit 5, so it needs FUSE_INIT_EXT): the kernel may map opened files onto
/// backing files; the reply's max_stack_depth must be 1 or 2, and FUSE_WRITEBACK_CACHE must not
/// be set with it.
#define FUSE_PASSTHROUGH (1ULL << 37)
/// OPEN reply flag: reads, writes, splice and mmap of this open file go to the backing file
/// named by `backing_id`. The kernel refuses it with any open flag but DIRECT_IO,
/// PARALLEL_DIRECT_WRITES and NOFLUSH (FOPEN_PASSTHROUGH_MASK), and DIRECT_IO overrides it.
#define FOPEN_PASSTHROUGH (1 << 7)
/// The argument of FUSE_DEV_IOC_BACKING_OPEN: `fd` is the backing file, `flags` and `padding` 0.
struct fuse_backing_map {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(FUSE_DEV_IOC_MAGIC, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#endif

/// `struct fuse_open_out` of 7.40: the former `padding` is `backing_id` (0: no passthrough).
/// Same size and layout as the 7.38 struct (pinned in shim.c); the OPEN handler replies with it.
struct cfuse_open_out {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};

/// `fuse_init_out.max_stack_depth` (7.40; `unused[0]` in the 7.38 header, offset 36).
static inline void cfuse_init_out_set_max_stack_depth(struct fuse_init_out *out, uint32_t depth) {
#if FUSE_KERNEL_MINOR_VERSION < 40
  out->unused[0] = depth;
#else
  out->max_stack_depth = depth;
#endif
}
static inline uint32_t cfuse_init_out_max_stack_depth(const struct fuse_init_out *out) {
#if FUSE_KERNEL_MINOR_VERSION < 40
  return out->unused[0];
#else
  return out->max_stack_depth;
#endif
}

/// Registers `fd` as a backing file of the connection of `device` (FUSE_DEV_IOC_BACKING_OPEN;
/// the kernel keeps its own reference to the file). Returns the backing id (> 0), or -errno
/// (EPERM without CAP_SYS_ADMIN or when passthrough was not negotiated, EOPNOTSUPP on a kernel
/// built without it, ENOTTY before 6.9).
int cfuse_backing_open(int device, int fd);
/// Drops backing id `id` (FUSE_DEV_IOC_BACKING_CLOSE): files already open keep their backing
/// file. Returns 0 or -errno.
int cfuse_backing_close(int device, int id);
/// Whether this process holds CAP_SYS_ADMIN in its effective set (what BACKING_OPEN needs).
int cfuse_has_sys_admin(void);


// ---- FUSE protocol 7.42: FUSE-over-io_uring ------------------------------------------------
// What <linux/fuse.h> of Linux 6.14+ (protocol 7.42: "add FUSE_OVER_IO_URING and all other
// io-uring related flags and data structures") adds. Values and layouts as in that file; shim.c
// pins them with `_Static_assert`s. The ring itself is set up with raw io_uring syscalls
// (<linux/io_uring.h> of Debian 12 knows IORING_OP_URING_CMD and SQE128) in uring.c.
#if FUSE_KERNEL_MINOR_VERSION < 42
/// INIT flag (flags2 bit 9): the daemon will serve requests through io_uring queues. The kernel
/// offers it only while /sys/module/fuse/parameters/enable_uring is Y.
#define FUSE_OVER_IO_URING (1ULL << 41)
#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128
/// The entry's trailer: the request's `unique` to commit with, and the payload's length (the
/// kernel's on fetch, the reply's on commit).
struct fuse_uring_ent_in_out {
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};
/// An entry's header buffer (iov[0] of REGISTER): the fuse_in_header on fetch / fuse_out_header
/// on commit, the opcode's argument struct (the request's first argument), the trailer.
struct fuse_uring_req_header {
  char in_out[FUSE_URING_IN_OUT_HEADER_SZ];
  char op_in[FUSE_URING_OP_IN_OUT_SZ];
  struct fuse_uring_ent_in_out ring_ent_in_out;
};
enum fuse_uring_cmd {
  FUSE_IO_URING_CMD_INVALID = 0,
  FUSE_IO_URING_CMD_REGISTER = 1,
  FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};
/// The command in the SQE's 80-byte command area.
struct fuse_uring_cmd_req {
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
#endif

/// One io_uring instance with 128-byte SQEs, for FUSE_IO_URING commands on a /dev/fuse
/// descriptor. Submission (`cfuse_ring_queue_*`, `cfuse_ring_wait`) is meant for one thread;
/// completions are reaped by that thread in `cfuse_ring_wait`.
struct cfuse_ring;

/// One completion: the SQE's `user_data` and its result (0 or -errno; for a FUSE command 0 means
/// a request is in the entry's buffers).
struct cfuse_completion {
  uint64_t user_data;
  int32_t result;
};

/// A ring of `entries` SQEs (a power of two; the CQ is twice that). NULL and `*error` = errno
/// when io_uring is not available (ENOSYS, EPERM under a seccomp or sysctl policy, ENOMEM).
struct cfuse_ring *cfuse_ring_create(unsigned entries, int *error);
void cfuse_ring_destroy(struct cfuse_ring *ring);
/// Queues a FUSE_IO_URING command on `device` for queue `qid`: REGISTER (`commit_id` 0) or
/// COMMIT_AND_FETCH; `iov` (two iovecs: the `fuse_uring_req_header` and the payload buffer)
/// must stay valid until the command completes. Returns 0, or -EBUSY when the SQ is full.
int cfuse_ring_queue_fuse(struct cfuse_ring *ring, int device, uint32_t command, uint16_t qid,
                          uint64_t commit_id, const struct iovec *iov, uint64_t user_data);
/// Queues an 8-byte read of `fd` (an eventfd) into `buffer`. Returns 0 or -EBUSY.
int cfuse_ring_queue_read(struct cfuse_ring *ring, int fd, void *buffer, uint64_t user_data);
/// Submits what was queued and waits for at least `wait` completions (0: none), then copies up
/// to `max` completions into `out`. Returns their count, or -errno (EINTR: a signal).
int cfuse_ring_wait(struct cfuse_ring *ring, unsigned wait, struct cfuse_completion *out, int max);
/// A new eventfd (counter 0, close-on-exec), or -1 and errno.
int cfuse_eventfd(void);
/// Pins the calling thread to CPU `cpu` (sched_setaffinity). Returns 0 or -errno.
int cfuse_pin_to_cpu(int cpu);

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

/// The most pieces `cfuse_reply_spliced` takes.
#define CFUSE_MAX_PIECES 64

/// 1 MiB of zeros to vmsplice zero pieces from: their total must not exceed it.
extern const size_t cfuse_zero_bytes;

/// The largest pipe this process can make, up to `limit` bytes (0 when it cannot make one):
/// a reply is spliced only through a pipe that holds it plus a page per piece and two
/// more, and `/proc/sys/fs/pipe-max-size` (1 MiB) binds processes without CAP_SYS_RESOURCE.
size_t cfuse_pipe_capacity(size_t limit);

/// The protocol version vdiskfs speaks (the newest it answers INIT with): 7.42 (passthrough,
/// FUSE-over-io_uring), whatever newer uapi header it was built against.
#define CFUSE_PROTOCOL_MAJOR 7u
#define CFUSE_PROTOCOL_MINOR 42u
/// The oldest kernel protocol vdiskfs serves (issue 19's floor; FUSE_MAX_PAGES is 7.28, the
/// 64-byte INIT reply with map_alignment 7.31). A kernel before 7.35 ignores FOPEN_NOFLUSH, one
/// before 7.36 sends the short (16-byte) INIT request.
#define CFUSE_PROTOCOL_MINOR_OLDEST 31u
/// What libfuse 3.14 reserves before the largest write payload in its request buffer
/// (FUSE_BUFFER_HEADER_SIZE): the request buffer is `max_write` plus this.
#define CFUSE_REQUEST_HEADER_ROOM 4096u

/// A new descriptor on the FUSE connection of `device` (`open("/dev/fuse")` +
/// `FUSE_DEV_IOC_CLONE`): requests read from it are answered through it, and each has its own
/// processing queue in the kernel. Returns the descriptor, or -errno.
int cfuse_clone_device(int device);

/// Sends the reply to request `unique`: `error` (0 or a negative errno) and, on success, `size`
/// bytes of `data`, header and data in one `writev` (the device takes a message whole or not at
/// all). Returns 0, or -errno (ENOENT: the request was interrupted or aborted; ENODEV: the
/// connection is gone).
int cfuse_reply(int device, uint64_t unique, int32_t error, const void *data, size_t size);

/// Tells the kernel to drop `inode`'s cached attributes and its pages of `length` bytes at
/// `offset` (`FUSE_NOTIFY_INVAL_INODE`, unique 0; length 0: to the end). Returns 0 or -errno
/// (ENOENT: the kernel holds nothing of the inode).
int cfuse_notify_inval_inode(int device, uint64_t inode, int64_t offset, int64_t length);

/// Lays out one `struct fuse_dirent` (the kernel's READDIR entry: inode, offset of the next
/// entry, name length, type, the name, zero padding to 8 bytes) at `buffer` if it fits in `size`
/// bytes. Returns the bytes the entry takes (written only when that is at most `size`).
size_t cfuse_add_dirent(void *buffer, size_t size, uint64_t inode, uint64_t next, uint32_t mode,
                        const char *name, size_t name_length);

/// A pipe of up to `size` bytes for spliced replies (`fds[0]` the read end). Returns its
/// capacity, or 0 when no pipe could be made (fds then -1).
size_t cfuse_pipe_open(int fds[2], size_t size);
void cfuse_pipe_close(int fds[2]);

/// Answers the read request `unique` with `pieces` (their sizes add up to the reply's data) by
/// splice: the reply header and zero pieces are `vmsplice`d into the pipe, file ranges
/// `splice`d into it, then the whole pipe is spliced into the device in one message. Returns 0
/// when sent; 1 when the pipe could not be filled (nothing was sent: the caller copies instead);
/// -errno when the device refused the reply. On anything but 0 the pipe holds leftovers: close
/// it and open a fresh one.
int cfuse_reply_spliced(int device, const int pipe_fds[2], uint64_t unique, const struct cfuse_piece *pieces,
                        size_t count);

/// SIGINT, SIGTERM and SIGHUP end the session loop: their handler records the first one and
/// posts `wake` (async-signal-safe); SIGPIPE is ignored (a reply to a vanished reader). Installed
/// without SA_RESTART. `cfuse_exit_signal` returns the recorded signal (0: none);
/// `cfuse_remove_exit_signals` restores the defaults. Process-wide, as signals are.
int cfuse_install_exit_signals(sem_t *wake);
void cfuse_remove_exit_signals(void);
int cfuse_exit_signal(void);

/// A no-op SIGUSR2 handler without SA_RESTART: `pthread_kill(worker, SIGUSR2)` makes a worker's
/// blocking `read` of the device fail with EINTR so that it sees it should stop.
int cfuse_install_wakeup_signal(void);

#ifdef __cplusplus
}
#endif

#endif  // CFUSE_H
