#include "CRBD.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int crbd_other_watchers(rbd_image_t image, uint64_t self_id) {
    size_t capacity = 16;
    for (;;) {
        rbd_image_watcher_t *watchers = calloc(capacity, sizeof *watchers);
        if (!watchers) return -ENOMEM;
        size_t count = capacity;
        int r = rbd_watchers_list(image, watchers, &count);
        if (r == -ERANGE && count > capacity && count <= 4096) {
            free(watchers);
            capacity = count;
            continue;
        }
        if (r < 0) {
            free(watchers);
            return r;
        }
        int others = 0;
        for (size_t i = 0; i < count && i < capacity; i++) {
            if ((uint64_t)watchers[i].id != self_id) others++;
        }
        rbd_watchers_list_cleanup(watchers, count < capacity ? count : capacity);
        free(watchers);
        return others;
    }
}

int crbd_lock_owner(rbd_image_t image, char *name, size_t name_len) {
    char *owners[8] = {0};
    size_t count = 8;
    rbd_lock_mode_t mode;
    if (name_len > 0) name[0] = 0;
    int r = rbd_lock_get_owners(image, &mode, owners, &count);
    if (r == -ENOENT) return 0;
    if (r == -ERANGE) return count > 1024 ? 1024 : (int)count;  /* more than 8: no names given */
    if (r < 0) return r;
    if (count > 8) count = 8;
    if (count > 0 && owners[0] && name_len > 0) {
        strncpy(name, owners[0], name_len - 1);
        name[name_len - 1] = 0;
    }
    rbd_lock_get_owners_cleanup(owners, count);
    return (int)count;
}
