"""The C allocator's one setting that keeps fetchd's memory flat at any message size.

A streamed message passes through a few short-lived buffers of up to 256 KiB per chunk (the TLS
layer's, the decoder's, the line-ending and dot-stuffing copies). glibc's malloc serves blocks
over its mmap threshold (128 KiB) with mmap, but raises that threshold each time such a block is
freed; from then on the chunks come from the heap, whose fragments are not given back, and the
peak RSS grows by several megabytes (issue 13: a 50 MB message over TLS, 43.8 MB; with the
threshold fixed, 36.2 MB). Fixing it costs about 0.15 s of CPU per 50 MB in page faults.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 128 << 10  # glibc's default, made fixed: setting it ends the adjustment


def fix_mmap_threshold() -> bool:
    """Set glibc's mmap threshold for good; False where there is no glibc ``mallopt``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
