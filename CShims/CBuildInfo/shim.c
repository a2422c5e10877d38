#include "CBuildInfo.h"

/* Set by Package.swift from $VDISKFS_GIT_COMMIT (the Makefile exports it); a plain
   `swift build` leaves it undefined and the version says so. */
#ifndef VDISKFS_GIT_COMMIT
#define VDISKFS_GIT_COMMIT ""
#endif

const char *const cbuild_git_commit = VDISKFS_GIT_COMMIT;
