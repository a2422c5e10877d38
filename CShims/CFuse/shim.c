// Placeholder until the FUSE shim lands.
#include "CFuse.h"
