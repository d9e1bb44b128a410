"""Smoke test of benchmarks/bench_flow.py: it runs with --small and ends with a complete JSON line.

No assertion on any timing: only the line's structure, and that every time is a positive finite
number and every ratio a positive finite number (or null for a motion part below the noise).
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("cv2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = {"rgb", "mv", "flow", "flow_fast"}
FLOWS = ("flow", "flow_fast")
RATIOS = ("over_mv_clip", "over_mv_clip_cpu", "over_mv_motion", "over_mv_motion_cpu")


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_small_run_reports_every_variant_and_ratio(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "bench_flow.py"), "--small"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert "| flow / mv (motion) |" in proc.stdout
  result = json.loads(lines[-1])
  assert result["benchmark"] == "flow" and result["small"] is True
  assert result["strides"] == [2, 4] and result["num_samples"] == 16
  for stride in result["strides"]:
    row = result[f"stride{stride}"]
    assert set(row["variants"]) == VARIANTS
    for times in row["variants"].values():
      assert _positive(times["ms_per_clip"]) and _positive(times["cpu_ms_per_clip"]), times
    for name in FLOWS:
      for ratio in RATIOS[:2]:
        assert _positive(row[f"{name}_{ratio}"]), (stride, name, ratio)
      for ratio in RATIOS[2:]:
        value = row[f"{name}_{ratio}"]
        assert value is None or (isinstance(value, (int, float)) and math.isfinite(value)), value
      assert isinstance(row[f"{name}_cpu_ms_per_pair"], (int, float))
