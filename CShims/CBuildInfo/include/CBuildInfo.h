#ifndef CBUILDINFO_H
#define CBUILDINFO_H

/// The git commit vdiskfs was built from, e.g. "5426f8c1a2b3" or "5426f8c1a2b3-dirty", or ""
/// when the build was not stamped. Swift cannot take a string from the build command line, so
/// the Makefile passes VDISKFS_GIT_COMMIT in the environment, Package.swift turns it into a -D
/// define for this one C file, and only shim.c is recompiled when the commit changes.
extern const char *const cbuild_git_commit;

#endif
