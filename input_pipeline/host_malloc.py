"""glibc malloc settings for a host that decodes clips: freed memory is kept for the next clip.

Every clip allocates and frees the same few large arrays (decoded frames, RGB copies, the motion
vectors of its window, fields: 0.3-9 MB each). By default glibc maps blocks above a moving
threshold freshly and gives the free memory at the top of a heap back to the kernel ("trims")
once it exceeds twice that threshold. A process can then land in a state where each clip's
arrays come back as fresh pages: 500-2500 minor page faults per clip, measured on 568x320 clips,
more with motion vectors than without (`benchmarks/RESULTS.md`). With the trim threshold at
256 MiB and the mmap threshold at 32 MiB (glibc's largest) the faults go away.

`keep_freed_memory` sets both, in this process with `mallopt` and, through the environment
(glibc reads `MALLOC_TRIM_THRESHOLD_` and `MALLOC_MMAP_THRESHOLD_` at start), in the processes
it starts later, e.g. grain workers. The cost: up to 256 MiB of freed memory stays with the
process per malloc arena instead of going back to the system. A value the user already set in
the environment wins; on other C libraries (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

TRIM_THRESHOLD = 256 << 20
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit hosts
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_ENV = {"MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}


def keep_freed_memory() -> str:
  """Sets glibc's trim and mmap thresholds (module docstring); returns one line for the log."""
  preset = sorted(name for name in _ENV if name in os.environ)
  if preset:
    return f"malloc: {', '.join(preset)} set in the environment, left as they are"
  if platform.libc_ver()[0] != "glibc":
    return "malloc: not glibc, left as it is"
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  refused = [name for name, option, value in (("trim", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                                ("mmap", _M_MMAP_THRESHOLD, MMAP_THRESHOLD))
             if not libc.mallopt(option, value)]
  if refused:
    return f"malloc: mallopt refused the {' and '.join(refused)} threshold"
  os.environ.update({name: str(value) for name, value in _ENV.items()})
  return (f"malloc: freed memory kept (trim threshold {TRIM_THRESHOLD >> 20} MiB, mmap threshold "
          f"{MMAP_THRESHOLD >> 20} MiB)")
