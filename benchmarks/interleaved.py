"""Side-by-side timing shared by the per-clip benchmarks (bench_input_pipeline, bench_flow).

Every clip runs every variant back to back, in an order rotated per clip and per repeat, so that
load changes on a shared machine hit all variants alike.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence


def time_variants(variants: Mapping[str, Callable], clips: Sequence[tuple], repeats: int
                  ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
  """{variant: [total wall s per repeat]}, {variant: [total CPU s per repeat]} over `clips`
  (each a tuple of the variants' arguments)."""
  names = list(variants)
  wall = {n: [] for n in names}
  cpu = {n: [] for n in names}
  for r in range(repeats):
    total_wall = dict.fromkeys(names, 0.0)
    total_cpu = dict.fromkeys(names, 0.0)
    for c, args in enumerate(clips):
      k = (r + c) % len(names)
      for name in names[k:] + names[:k]:
        w0, c0 = time.perf_counter(), time.process_time()
        variants[name](*args)
        total_wall[name] += time.perf_counter() - w0
        total_cpu[name] += time.process_time() - c0
    for name in names:
      wall[name].append(total_wall[name])
      cpu[name].append(total_cpu[name])
  return wall, cpu
