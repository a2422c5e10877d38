#ifndef CRBD_H
#define CRBD_H
// librbd and librados for Sources/Stores/RBD, plus two helpers that walk librbd's C arrays of
// strings and structs (awkward and easy to get wrong from Swift).
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stddef.h>
#include <stdint.h>

/// How many clients other than `self_id` (rados_get_instance_id of this connection) watch the
/// image's header, i.e. have it open for writing and are alive; -errno on failure.
int crbd_other_watchers(rbd_image_t image, uint64_t self_id);

/// Copies the first exclusive-lock owner's name (`client.N`) into `name` (NUL-terminated, cut
/// to `name_len`) and returns the number of owners: 0 when nobody holds the lock; -errno.
int crbd_lock_owner(rbd_image_t image, char *name, size_t name_len);
#endif
