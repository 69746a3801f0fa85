"""``keep_read_buffers``: glibc's malloc told to reuse the megabyte buffers of log capture.

Why: each read of a flooding service makes a few buffers of about 1 MiB (the bytes read, the
lines with their prefixes). glibc serves an allocation that big with a fresh ``mmap`` (its
threshold starts at 128 KiB and only adapts after a free) and gives heap memory back with
``brk`` once 128 KiB is free at the top, so every read faulted its buffers in anew: about
425 page faults per MiB captured, half of the daemon's system time outside the copies
themselves (measured: 0.5 ms of system time per MiB, 0.1 ms with the settings below; a page
fault is dear in a VM). With ``M_MMAP_THRESHOLD`` at 4 MiB those buffers come from the heap,
and with ``M_TRIM_THRESHOLD`` at 8 MiB the heap keeps what a read frees for the next one. The
cost: after a flood the daemon may keep up to 8 MiB of free heap (resident, reused by the next
flood). A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_read_buffers"]

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_read_buffers() -> bool:
    """Set the two thresholds; True when glibc took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it, and only glibc has these knobs)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
