// fuse_common.h uses NULL without including <stddef.h>: include it first.
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>
#include <errno.h>
#include <signal.h>
#include <semaphore.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fuse.h>
#include <linux/capability.h>
#include <sys/syscall.h>

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

// The kernel ABI the request loop uses, pinned to protocol 7.38's layout (sizes and offsets from
// include/uapi/linux/fuse.h): a header that disagrees fails the build instead of corrupting
// requests or replies.
#define CFUSE_LAYOUT(type, size) _Static_assert(sizeof(struct type) == (size), #type " size")
#define CFUSE_FIELD(type, field, offset) \
  _Static_assert(offsetof(struct type, field) == (offset), #type "." #field " offset")
CFUSE_LAYOUT(fuse_in_header, 40);
CFUSE_FIELD(fuse_in_header, len, 0);
CFUSE_FIELD(fuse_in_header, opcode, 4);
CFUSE_FIELD(fuse_in_header, unique, 8);
CFUSE_FIELD(fuse_in_header, nodeid, 16);
CFUSE_FIELD(fuse_in_header, uid, 24);
CFUSE_FIELD(fuse_in_header, gid, 28);
CFUSE_FIELD(fuse_in_header, pid, 32);
CFUSE_LAYOUT(fuse_out_header, 16);
CFUSE_FIELD(fuse_out_header, len, 0);
CFUSE_FIELD(fuse_out_header, error, 4);
CFUSE_FIELD(fuse_out_header, unique, 8);
CFUSE_LAYOUT(fuse_init_in, 64);
CFUSE_FIELD(fuse_init_in, major, 0);
CFUSE_FIELD(fuse_init_in, minor, 4);
CFUSE_FIELD(fuse_init_in, max_readahead, 8);
CFUSE_FIELD(fuse_init_in, flags, 12);
CFUSE_FIELD(fuse_init_in, flags2, 16);
CFUSE_LAYOUT(fuse_init_out, 64);
CFUSE_FIELD(fuse_init_out, max_readahead, 8);
CFUSE_FIELD(fuse_init_out, flags, 12);
CFUSE_FIELD(fuse_init_out, max_background, 16);
CFUSE_FIELD(fuse_init_out, congestion_threshold, 18);
CFUSE_FIELD(fuse_init_out, max_write, 20);
CFUSE_FIELD(fuse_init_out, time_gran, 24);
CFUSE_FIELD(fuse_init_out, max_pages, 28);
CFUSE_FIELD(fuse_init_out, map_alignment, 30);
CFUSE_FIELD(fuse_init_out, flags2, 32);
CFUSE_LAYOUT(fuse_attr, 88);
CFUSE_FIELD(fuse_attr, size, 8);
CFUSE_FIELD(fuse_attr, mode, 60);
CFUSE_FIELD(fuse_attr, blksize, 80);
CFUSE_LAYOUT(fuse_entry_out, 128);
CFUSE_FIELD(fuse_entry_out, attr, 40);
CFUSE_LAYOUT(fuse_attr_out, 104);
CFUSE_FIELD(fuse_attr_out, attr, 16);
CFUSE_LAYOUT(fuse_getattr_in, 16);
CFUSE_LAYOUT(fuse_setattr_in, 88);
CFUSE_FIELD(fuse_setattr_in, size, 16);
CFUSE_FIELD(fuse_setattr_in, atime, 32);
CFUSE_FIELD(fuse_setattr_in, mode, 68);
CFUSE_FIELD(fuse_setattr_in, uid, 76);
CFUSE_FIELD(fuse_setattr_in, gid, 80);
CFUSE_LAYOUT(fuse_open_in, 8);
CFUSE_LAYOUT(fuse_open_out, 16);
CFUSE_FIELD(fuse_open_out, fh, 0);
CFUSE_FIELD(fuse_open_out, open_flags, 8);
CFUSE_LAYOUT(fuse_release_in, 24);
CFUSE_LAYOUT(fuse_flush_in, 24);
CFUSE_LAYOUT(fuse_read_in, 40);
CFUSE_FIELD(fuse_read_in, offset, 8);
CFUSE_FIELD(fuse_read_in, size, 16);
CFUSE_LAYOUT(fuse_write_in, 40);
CFUSE_FIELD(fuse_write_in, offset, 8);
CFUSE_FIELD(fuse_write_in, size, 16);
CFUSE_FIELD(fuse_write_in, write_flags, 20);
CFUSE_LAYOUT(fuse_write_out, 8);
CFUSE_LAYOUT(fuse_statfs_out, 80);
CFUSE_LAYOUT(fuse_fsync_in, 16);
CFUSE_LAYOUT(fuse_fallocate_in, 32);
CFUSE_FIELD(fuse_fallocate_in, mode, 24);
CFUSE_LAYOUT(fuse_lseek_in, 24);
CFUSE_FIELD(fuse_lseek_in, whence, 16);
CFUSE_LAYOUT(fuse_lseek_out, 8);
CFUSE_LAYOUT(fuse_forget_in, 8);
CFUSE_LAYOUT(fuse_batch_forget_in, 8);
CFUSE_LAYOUT(fuse_interrupt_in, 8);
CFUSE_LAYOUT(fuse_dirent, 24);
CFUSE_FIELD(fuse_dirent, namelen, 16);
CFUSE_FIELD(fuse_dirent, type, 20);
CFUSE_LAYOUT(fuse_notify_inval_inode_out, 24);
CFUSE_LAYOUT(fuse_notify_inval_entry_out, 16);
// The setattr bits the handlers read are libfuse's FUSE_SET_ATTR_* values, which are the
// kernel's FATTR_*.
_Static_assert(FATTR_MODE == FUSE_SET_ATTR_MODE && FATTR_UID == FUSE_SET_ATTR_UID &&
                   FATTR_GID == FUSE_SET_ATTR_GID && FATTR_SIZE == FUSE_SET_ATTR_SIZE &&
                   FATTR_ATIME == FUSE_SET_ATTR_ATIME && FATTR_MTIME == FUSE_SET_ATTR_MTIME &&
                   FATTR_ATIME_NOW == FUSE_SET_ATTR_ATIME_NOW && FATTR_MTIME_NOW == FUSE_SET_ATTR_MTIME_NOW &&
                   FATTR_CTIME == FUSE_SET_ATTR_CTIME,
               "FATTR_* == FUSE_SET_ATTR_*");

// Protocol 7.40 (include/uapi/linux/fuse.h of Linux 6.9+): the passthrough additions CFuse.h
// defines when the installed header is older.
CFUSE_LAYOUT(cfuse_open_out, 16);
_Static_assert(sizeof(struct cfuse_open_out) == sizeof(struct fuse_open_out), "cfuse_open_out size");
CFUSE_FIELD(cfuse_open_out, fh, 0);
CFUSE_FIELD(cfuse_open_out, open_flags, 8);
CFUSE_FIELD(cfuse_open_out, backing_id, 12);
#if FUSE_KERNEL_MINOR_VERSION < 40
CFUSE_FIELD(fuse_open_out, padding, 12);
CFUSE_FIELD(fuse_init_out, unused, 36);
#else
CFUSE_FIELD(fuse_open_out, backing_id, 12);
CFUSE_FIELD(fuse_init_out, max_stack_depth, 36);
#endif
CFUSE_LAYOUT(fuse_backing_map, 16);
CFUSE_FIELD(fuse_backing_map, fd, 0);
CFUSE_FIELD(fuse_backing_map, flags, 4);
CFUSE_FIELD(fuse_backing_map, padding, 8);
_Static_assert(FUSE_PASSTHROUGH == (1ULL << 37), "FUSE_PASSTHROUGH");
_Static_assert(FOPEN_PASSTHROUGH == (1 << 7), "FOPEN_PASSTHROUGH");
_Static_assert(FUSE_DEV_IOC_BACKING_OPEN == 0x4010e501, "FUSE_DEV_IOC_BACKING_OPEN");
_Static_assert(FUSE_DEV_IOC_BACKING_CLOSE == 0x4004e502, "FUSE_DEV_IOC_BACKING_CLOSE");

int cfuse_backing_open(int device, int fd) {
  struct fuse_backing_map map = {.fd = fd, .flags = 0, .padding = 0};
  int id = ioctl(device, FUSE_DEV_IOC_BACKING_OPEN, &map);
  if (id < 0) return -errno;
  if (id == 0) return -EINVAL;
  return id;
}

int cfuse_backing_close(int device, int id) {
  uint32_t value = (uint32_t)id;
  return ioctl(device, FUSE_DEV_IOC_BACKING_CLOSE, &value) == 0 ? 0 : -errno;
}

int cfuse_has_sys_admin(void) {
  struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  if (syscall(SYS_capget, &header, data) != 0) return 0;
  return (data[CAP_SYS_ADMIN / 32].effective >> (CAP_SYS_ADMIN % 32)) & 1;
}

int cfuse_clone_device(int device) {
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -errno;
  uint32_t master = (uint32_t)device;
  if (ioctl(fd, FUSE_DEV_IOC_CLONE, &master) != 0) {
    int saved = errno;
    close(fd);
    return -saved;
  }
  return fd;
}

static int cfuse_write_message(int device, const struct iovec *pieces, int count) {
  size_t total = 0;
  for (int i = 0; i < count; i++) total += pieces[i].iov_len;
  for (;;) {
    ssize_t n = writev(device, pieces, count);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    // The device takes a message whole or fails it: a short count is not expected.
    return (size_t)n == total ? 0 : -EIO;
  }
}

int cfuse_reply(int device, uint64_t unique, int32_t error, const void *data, size_t size) {
  if (error != 0 || data == NULL) size = 0;
  if (size > UINT32_MAX - sizeof(struct fuse_out_header)) return -EINVAL;
  struct fuse_out_header header = {
      .len = (uint32_t)(sizeof header + size), .error = error, .unique = unique};
  struct iovec pieces[2] = {{.iov_base = &header, .iov_len = sizeof header},
                            {.iov_base = (void *)data, .iov_len = size}};
  return cfuse_write_message(device, pieces, size > 0 ? 2 : 1);
}

int cfuse_notify_inval_inode(int device, uint64_t inode, int64_t offset, int64_t length) {
  struct fuse_notify_inval_inode_out out = {.ino = inode, .off = offset, .len = length};
  struct fuse_out_header header = {
      .len = (uint32_t)(sizeof header + sizeof out), .error = FUSE_NOTIFY_INVAL_INODE, .unique = 0};
  struct iovec pieces[2] = {{.iov_base = &header, .iov_len = sizeof header},
                            {.iov_base = &out, .iov_len = sizeof out}};
  return cfuse_write_message(device, pieces, 2);
}

size_t cfuse_add_dirent(void *buffer, size_t size, uint64_t inode, uint64_t next, uint32_t mode,
                        const char *name, size_t name_length) {
  size_t needed = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + name_length);
  if (needed > size || name_length > UINT32_MAX) return needed;
  struct fuse_dirent *entry = buffer;
  entry->ino = inode;
  entry->off = next;
  entry->namelen = (uint32_t)name_length;
  entry->type = (mode & S_IFMT) >> 12;
  memcpy(entry->name, name, name_length);
  memset(entry->name + name_length, 0, needed - FUSE_NAME_OFFSET - name_length);
  return needed;
}

size_t cfuse_pipe_open(int fds[2], size_t size) {
  fds[0] = fds[1] = -1;
  if (pipe2(fds, O_CLOEXEC) != 0) return 0;
  for (size_t want = size; want > 4096; want /= 2) {
    if (fcntl(fds[0], F_SETPIPE_SZ, (int)want) > 0) break;
  }
  int got = fcntl(fds[0], F_GETPIPE_SZ);
  if (got <= 0) {
    cfuse_pipe_close(fds);
    return 0;
  }
  return (size_t)got;
}

void cfuse_pipe_close(int fds[2]) {
  if (fds[0] >= 0) close(fds[0]);
  if (fds[1] >= 0) close(fds[1]);
  fds[0] = fds[1] = -1;
}

/// vmsplices all of `base[0..<length]` into the pipe (never blocking: the caller checked the fit).
static int cfuse_vmsplice_all(int pipe_in, const void *base, size_t length) {
  const char *at = base;
  while (length > 0) {
    struct iovec iov = {.iov_base = (void *)at, .iov_len = length};
    ssize_t n = vmsplice(pipe_in, &iov, 1, SPLICE_F_NONBLOCK);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    at += n;
    length -= (size_t)n;
  }
  return 0;
}

int cfuse_reply_spliced(int device, const int pipe_fds[2], uint64_t unique, const struct cfuse_piece *pieces,
                        size_t count) {
  if (count == 0 || count > CFUSE_MAX_PIECES) return 1;
  size_t total = sizeof(struct fuse_out_header);
  for (size_t i = 0; i < count; i++) total += pieces[i].size;
  if (total > UINT32_MAX) return 1;
  struct fuse_out_header header = {.len = (uint32_t)total, .error = 0, .unique = unique};
  if (cfuse_vmsplice_all(pipe_fds[1], &header, sizeof header) != 0) return 1;
  for (size_t i = 0; i < count; i++) {
    if (pieces[i].fd < 0) {
      if (pieces[i].size > sizeof cfuse_zeros) return 1;
      if (cfuse_vmsplice_all(pipe_fds[1], cfuse_zeros, pieces[i].size) != 0) return 1;
      continue;
    }
    loff_t offset = pieces[i].offset;
    size_t left = pieces[i].size;
    while (left > 0) {
      ssize_t n = splice(pieces[i].fd, &offset, pipe_fds[1], NULL, left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return 1;  // an error, the pipe full, or the file shorter than its map says
      left -= (size_t)n;
    }
  }
  for (;;) {
    ssize_t n = splice(pipe_fds[0], NULL, device, NULL, total, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    return (size_t)n == total ? 0 : -EIO;
  }
}

static volatile sig_atomic_t cfuse_caught_signal = 0;
static sem_t *_Atomic cfuse_signal_wake = NULL;
static const int cfuse_exit_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void cfuse_exit_handler(int sig) {
  int saved = errno;
  if (cfuse_caught_signal == 0) cfuse_caught_signal = sig;
  sem_t *wake = atomic_load(&cfuse_signal_wake);
  if (wake != NULL) sem_post(wake);
  errno = saved;
}

int cfuse_install_exit_signals(sem_t *wake) {
  cfuse_caught_signal = 0;
  atomic_store(&cfuse_signal_wake, wake);
  struct sigaction action;
  memset(&action, 0, sizeof action);
  sigemptyset(&action.sa_mask);
  action.sa_handler = cfuse_exit_handler;
  for (size_t i = 0; i < sizeof cfuse_exit_signals / sizeof cfuse_exit_signals[0]; i++) {
    if (sigaction(cfuse_exit_signals[i], &action, NULL) != 0) return -errno;
  }
  action.sa_handler = SIG_IGN;
  if (sigaction(SIGPIPE, &action, NULL) != 0) return -errno;
  return 0;
}

void cfuse_remove_exit_signals(void) {
  for (size_t i = 0; i < sizeof cfuse_exit_signals / sizeof cfuse_exit_signals[0]; i++) {
    signal(cfuse_exit_signals[i], SIG_DFL);
  }
  atomic_store(&cfuse_signal_wake, NULL);
}

int cfuse_exit_signal(void) { return cfuse_caught_signal; }

static void cfuse_wakeup_handler(int sig) { (void)sig; }

int cfuse_install_wakeup_signal(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  sigemptyset(&action.sa_mask);
  action.sa_handler = cfuse_wakeup_handler;  // no SA_RESTART: a blocked read fails with EINTR
  return sigaction(SIGUSR2, &action, NULL) == 0 ? 0 : -errno;
}
