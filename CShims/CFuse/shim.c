// fuse_common.h uses NULL without including <stddef.h>: include it first.
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "CFuse.h"

struct fuse_args cfuse_args_init(int argc, char **argv) {
  struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
  return args;
}

// This file is compiled with _GNU_SOURCE (Package.swift), so <unistd.h> defines both.
const int cfuse_seek_data = SEEK_DATA;
const int cfuse_seek_hole = SEEK_HOLE;

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
