// Compiled with _GNU_SOURCE (Package.swift), so the headers define every name used here.
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include "CLinux.h"

const int clinux_seek_data = SEEK_DATA;
const int clinux_seek_hole = SEEK_HOLE;

const int clinux_f_ofd_getlk = F_OFD_GETLK;
const int clinux_f_ofd_setlk = F_OFD_SETLK;

const int clinux_falloc_fl_keep_size = FALLOC_FL_KEEP_SIZE;
const int clinux_falloc_fl_punch_hole = FALLOC_FL_PUNCH_HOLE;
const int clinux_falloc_fl_zero_range = FALLOC_FL_ZERO_RANGE;

const int clinux_o_direct = O_DIRECT;

int clinux_fallocate(int fd, int mode, long long offset, long long length) {
  return fallocate(fd, mode, (off_t)offset, (off_t)length);
}
