"""Process memory: let glibc's malloc keep freed blocks for reuse (every `iaa` command but `serve`)."""
from __future__ import annotations

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (<malloc.h>)


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed blocks instead of returning every large one to the kernel. Each teacher and
    student forward pass allocates activations of tens of MB; by default each is a fresh mmap whose pages fault
    in zeroed (a 700-photo `iaa taste` made 23 million page faults, 73 of its 432 CPU-seconds in the kernel). The
    process keeps its peak working set instead. No-op where the C library has no `mallopt` (not glibc)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 1 << 30)
        mallopt(M_TRIM_THRESHOLD, 1 << 30)
