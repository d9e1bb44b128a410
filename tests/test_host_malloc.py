"""input_pipeline.host_malloc: freed memory stays with the process (checked by its page faults)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# Allocates 12 MiB in 96 KiB blocks (below glibc's initial mmap threshold, so they come from the
# heap), touches and frees them all, then does it again; prints the minor page faults of the
# second round. Freed at the top of the heap, 12 MiB is well over glibc's default trim threshold.
_PROBE = r"""
import ctypes, resource, sys
from input_pipeline import host_malloc
if sys.argv[1] == "keep":
  print(host_malloc.keep_freed_memory(), file=sys.stderr)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def round_trip():
  blocks = [libc.malloc(96 << 10) for _ in range(128)]
  for b in blocks:
    ctypes.memset(b, 1, 96 << 10)
  for b in reversed(blocks):
    libc.free(b)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_round_faults(mode: str, env: dict[str, str] | None = None) -> tuple[int, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | (env or {})
  done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                        env=env, check=True)
  return int(done.stdout.strip()), done.stderr.strip()


def test_freed_memory_is_kept():
  default, _ = _second_round_faults("default")
  kept, line = _second_round_faults("keep")
  assert default > 1000  # glibc gave the 12 MiB back and faults it in again (3072 pages)
  assert kept < 100, line
  assert line.startswith("malloc: freed memory kept")


def test_an_environment_setting_wins():
  faults, line = _second_round_faults("keep", {"MALLOC_TRIM_THRESHOLD_": "131072"})
  assert "MALLOC_TRIM_THRESHOLD_ set in the environment" in line
  assert faults > 1000  # the user's (default) trim threshold is in force


def test_processes_started_later_inherit_it():
  child = ("import os; "
           "print(os.environ['MALLOC_TRIM_THRESHOLD_'], os.environ['MALLOC_MMAP_THRESHOLD_'])")
  probe = ("import subprocess, sys; from input_pipeline import host_malloc; "
           f"host_malloc.keep_freed_memory(); subprocess.run([sys.executable, '-c', {child!r}])")
  env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                        check=True)
  assert done.stdout.split() == [str(256 << 20), str(32 << 20)]
