// ThreadSanitizer builds only: here `Mutex` means VDiskCore's pthread-based `TSanMutex`, which
// TSan can see (Sources/VDiskCore/TSanMutex.swift says why); other builds use
// `Synchronization.Mutex`. Needed in every module that uses `Mutex`; scripts/sanitize.sh checks.
#if VDISKFS_TSAN
  import VDiskCore

  typealias Mutex = VDiskCore.TSanMutex
#endif
