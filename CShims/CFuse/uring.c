// A minimal io_uring for FUSE-over-io_uring (FUSE protocol 7.42): setup with 128-byte SQEs,
// IORING_OP_URING_CMD submissions on /dev/fuse, an eventfd read for wakeups, and reaping.
// Raw syscalls and <linux/io_uring.h> (Debian 12's uapi headers know SQE128 and URING_CMD), so
// no liburing is needed at build or run time.
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/io_uring.h>

#include "CFuse.h"

_Static_assert(sizeof(struct fuse_uring_ent_in_out) == 32, "fuse_uring_ent_in_out size");
_Static_assert(sizeof(struct fuse_uring_req_header) == 288, "fuse_uring_req_header size");
_Static_assert(offsetof(struct fuse_uring_req_header, op_in) == 128, "fuse_uring_req_header.op_in");
_Static_assert(offsetof(struct fuse_uring_req_header, ring_ent_in_out) == 256,
               "fuse_uring_req_header.ring_ent_in_out");
_Static_assert(sizeof(struct fuse_uring_cmd_req) == 24, "fuse_uring_cmd_req size");
_Static_assert(offsetof(struct fuse_uring_cmd_req, qid) == 16, "fuse_uring_cmd_req.qid");
_Static_assert(FUSE_OVER_IO_URING == (1ULL << 41), "FUSE_OVER_IO_URING");
_Static_assert(FUSE_IO_URING_CMD_REGISTER == 1 && FUSE_IO_URING_CMD_COMMIT_AND_FETCH == 2,
               "fuse_uring_cmd values");
// The command area of a 128-byte SQE starts at byte 48 and holds 80 bytes.
_Static_assert(offsetof(struct io_uring_sqe, cmd) == 48, "io_uring_sqe.cmd offset");
_Static_assert(sizeof(struct fuse_uring_cmd_req) <= 80, "fuse_uring_cmd_req fits the SQE");

struct cfuse_ring {
  int fd;
  unsigned sq_entries;
  unsigned cq_entries;
  // SQ ring
  void *sq_map;
  size_t sq_map_size;
  _Atomic unsigned *sq_head;
  _Atomic unsigned *sq_tail;
  unsigned sq_mask;
  unsigned *sq_array;
  // CQ ring
  void *cq_map;
  size_t cq_map_size;
  _Atomic unsigned *cq_head;
  _Atomic unsigned *cq_tail;
  unsigned cq_mask;
  struct io_uring_cqe *cqes;
  // SQEs (128 bytes each)
  unsigned char *sqes;
  size_t sqes_size;
  // Queued since the last submit.
  unsigned pending;
};

struct cfuse_ring *cfuse_ring_create(unsigned entries, int *error) {
  struct io_uring_params params;
  memset(&params, 0, sizeof params);
  params.flags = IORING_SETUP_SQE128;
  int fd = (int)syscall(__NR_io_uring_setup, entries, &params);
  if (fd < 0) {
    *error = errno;
    return NULL;
  }
  struct cfuse_ring *ring = calloc(1, sizeof *ring);
  if (!ring) {
    close(fd);
    *error = ENOMEM;
    return NULL;
  }
  ring->fd = fd;
  ring->sq_entries = params.sq_entries;
  ring->cq_entries = params.cq_entries;
  ring->sq_map_size = params.sq_off.array + params.sq_entries * sizeof(unsigned);
  ring->cq_map_size = params.cq_off.cqes + params.cq_entries * sizeof(struct io_uring_cqe);
  int single = (params.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && ring->cq_map_size > ring->sq_map_size) ring->sq_map_size = ring->cq_map_size;
  ring->sq_map = mmap(NULL, ring->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                      IORING_OFF_SQ_RING);
  if (ring->sq_map == MAP_FAILED) goto failed;
  if (single) {
    ring->cq_map = ring->sq_map;
  } else {
    ring->cq_map = mmap(NULL, ring->cq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                        IORING_OFF_CQ_RING);
    if (ring->cq_map == MAP_FAILED) {
      ring->cq_map = NULL;
      goto failed;
    }
  }
  ring->sqes_size = (size_t)params.sq_entries * 128;
  ring->sqes = mmap(NULL, ring->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                    IORING_OFF_SQES);
  if (ring->sqes == MAP_FAILED) {
    ring->sqes = NULL;
    goto failed;
  }
  unsigned char *sq = ring->sq_map;
  ring->sq_head = (_Atomic unsigned *)(sq + params.sq_off.head);
  ring->sq_tail = (_Atomic unsigned *)(sq + params.sq_off.tail);
  ring->sq_mask = *(unsigned *)(sq + params.sq_off.ring_mask);
  ring->sq_array = (unsigned *)(sq + params.sq_off.array);
  unsigned char *cq = ring->cq_map;
  ring->cq_head = (_Atomic unsigned *)(cq + params.cq_off.head);
  ring->cq_tail = (_Atomic unsigned *)(cq + params.cq_off.tail);
  ring->cq_mask = *(unsigned *)(cq + params.cq_off.ring_mask);
  ring->cqes = (struct io_uring_cqe *)(cq + params.cq_off.cqes);
  return ring;

failed:
  *error = errno;
  if (ring->sq_map == MAP_FAILED) ring->sq_map = NULL;
  cfuse_ring_destroy(ring);
  return NULL;
}

void cfuse_ring_destroy(struct cfuse_ring *ring) {
  if (!ring) return;
  if (ring->sqes) munmap(ring->sqes, ring->sqes_size);
  if (ring->cq_map && ring->cq_map != ring->sq_map) munmap(ring->cq_map, ring->cq_map_size);
  if (ring->sq_map) munmap(ring->sq_map, ring->sq_map_size);
  close(ring->fd);
  free(ring);
}

/// The next free SQE, zeroed, or NULL when the SQ is full.
static struct io_uring_sqe *cfuse_ring_next_sqe(struct cfuse_ring *ring) {
  unsigned head = atomic_load_explicit(ring->sq_head, memory_order_acquire);
  unsigned tail = atomic_load_explicit(ring->sq_tail, memory_order_relaxed);
  if (tail - head >= ring->sq_entries) return NULL;
  unsigned index = tail & ring->sq_mask;
  struct io_uring_sqe *sqe = (struct io_uring_sqe *)(ring->sqes + (size_t)index * 128);
  memset(sqe, 0, 128);
  ring->sq_array[index] = index;
  return sqe;
}

static void cfuse_ring_advance(struct cfuse_ring *ring) {
  unsigned tail = atomic_load_explicit(ring->sq_tail, memory_order_relaxed);
  atomic_store_explicit(ring->sq_tail, tail + 1, memory_order_release);
  ring->pending++;
}

int cfuse_ring_queue_fuse(struct cfuse_ring *ring, int device, uint32_t command, uint16_t qid,
                          uint64_t commit_id, const struct iovec *iov, uint64_t user_data) {
  struct io_uring_sqe *sqe = cfuse_ring_next_sqe(ring);
  if (!sqe) return -EBUSY;
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = device;
  sqe->cmd_op = command;
  sqe->addr = (uint64_t)(uintptr_t)iov;
  sqe->len = 2;
  sqe->user_data = user_data;
  struct fuse_uring_cmd_req *req = (struct fuse_uring_cmd_req *)sqe->cmd;
  req->commit_id = commit_id;
  req->qid = qid;
  cfuse_ring_advance(ring);
  return 0;
}

int cfuse_ring_queue_read(struct cfuse_ring *ring, int fd, void *buffer, uint64_t user_data) {
  struct io_uring_sqe *sqe = cfuse_ring_next_sqe(ring);
  if (!sqe) return -EBUSY;
  sqe->opcode = IORING_OP_READ;
  sqe->fd = fd;
  sqe->addr = (uint64_t)(uintptr_t)buffer;
  sqe->len = 8;
  sqe->off = (uint64_t)-1;
  sqe->user_data = user_data;
  cfuse_ring_advance(ring);
  return 0;
}

int cfuse_ring_wait(struct cfuse_ring *ring, unsigned wait, struct cfuse_completion *out, int max) {
  unsigned head = atomic_load_explicit(ring->cq_head, memory_order_relaxed);
  unsigned tail = atomic_load_explicit(ring->cq_tail, memory_order_acquire);
  // Completions already there: do not wait for more, only submit.
  if (head != tail) wait = 0;
  if (ring->pending > 0 || wait > 0) {
    unsigned flags = wait > 0 ? IORING_ENTER_GETEVENTS : 0;
    long r = syscall(__NR_io_uring_enter, ring->fd, ring->pending, wait, flags, NULL, 0);
    if (r < 0) {
      // EINTR/EAGAIN: nothing consumed; the queued SQEs stay for the next call. EBUSY: the CQ is
      // full; reap first.
      if (errno != EBUSY) return -errno;
    } else {
      ring->pending -= (unsigned)r <= ring->pending ? (unsigned)r : ring->pending;
    }
    tail = atomic_load_explicit(ring->cq_tail, memory_order_acquire);
  }
  int count = 0;
  while (head != tail && count < max) {
    struct io_uring_cqe *cqe = &ring->cqes[head & ring->cq_mask];
    out[count].user_data = cqe->user_data;
    out[count].result = cqe->res;
    count++;
    head++;
  }
  atomic_store_explicit(ring->cq_head, head, memory_order_release);
  return count;
}

int cfuse_pin_to_cpu(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return -EINVAL;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -errno;
}

int cfuse_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }
