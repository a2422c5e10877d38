// Linux constants Swift's Glibc module does not show, for VDiskCore's system calls.
//
// Swift's Glibc module is built without `_GNU_SOURCE`, so <unistd.h>, <fcntl.h> and
// <linux/falloc.h> hide the names below; typing their values in as numbers hides where they come
// from and breaks silently on another architecture. This file (compiled with `_GNU_SOURCE`) takes
// them from the C headers and exposes them as constants (the swift-nio CNIOLinux way). Only
// VDiskCore's Syscalls.swift (and, for `O_DIRECT` / `FALLOC_FL_*`, the FUSE adapter) import it.
#ifndef CLINUX_H
#define CLINUX_H

#ifdef __cplusplus
extern "C" {
#endif

/// `lseek` whence values that ask the file system where data and holes are (Linux 3.1).
extern const int clinux_seek_data;
extern const int clinux_seek_hole;

/// Open-file-description byte-range locks (Linux 3.15), the kind QEMU takes on image files:
/// owned by the open file, not the process, so two opens of one file in one process conflict.
extern const int clinux_f_ofd_getlk;
extern const int clinux_f_ofd_setlk;

/// `fallocate` modes: keep the file size, deallocate a range, zero a range.
extern const int clinux_falloc_fl_keep_size;
extern const int clinux_falloc_fl_punch_hole;
extern const int clinux_falloc_fl_zero_range;

/// `fallocate(2)`, which the Swift Glibc module hides: returns 0, or -1 with `errno` set.
int clinux_fallocate(int fd, int mode, long long offset, long long length);

/// `open` flag for I/O that bypasses the page cache; its value differs between architectures.
extern const int clinux_o_direct;

#ifdef __cplusplus
}
#endif

#endif  // CLINUX_H
