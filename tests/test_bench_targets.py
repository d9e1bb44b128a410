"""Smoke test of benchmarks/bench_targets.py: it runs with --small and ends with a complete JSON
line whose byte counts are exactly what the outputs' shapes imply.

No assertion on any timing: only that every ratio is a positive finite number.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

VARIANTS = ("pixels", "frame_diff", "trajectory", "trajectory_mme", "all")
# --small's clip: 8 frames of 112 x 112, tubelet 2, patch 16, 2 x 2 trajectory points.
T, S, TUBELET, PATCH, POINTS = 8, 112, 2, 16, 2
t, h = T // TUBELET, S // PATCH
N = t * h * h


def _run(tmp_path) -> dict:
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "bench_targets.py"), "--small"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _expected_bytes(stride: int) -> dict[str, int]:
  """Bytes per clip (one repeat) each variant sends, from the documented shapes."""
  pixels = T * S * S * 3 + t * h * h + 4          # frames uint8, mask bool, label int32
  between = t * (TUBELET - 1) * (stride - 1) * S * S * 3   # uint8 [t, K, S, S, 3]

  def trajectory(steps):  # float32 [N, steps * (1 + P) * 2] + trajectory_valid float32
    return N * steps * (1 + POINTS ** 2) * 2 * 4 + 4

  span = (TUBELET - 1) * stride  # the default steps: the tubelet's span
  return {"pixels": pixels, "frame_diff": pixels + between,
          "trajectory": pixels + trajectory(span), "trajectory_mme": pixels + trajectory(4),
          "all": pixels + between + trajectory(span)}


def test_small_run_reports_every_variant_and_exact_bytes(tmp_path):
  result = _run(tmp_path)
  assert result["benchmark"] == "targets" and result["small"] is True
  assert (result["num_frames"], result["size"]) == (T, S)
  assert result["strides"] == [2, 4]
  for stride in (2, 4):
    expected = _expected_bytes(stride)
    rows = {r["variant"]: r for r in result["rows"] if r["stride"] == stride}
    assert set(rows) == set(VARIANTS)
    for name in VARIANTS:
      key = f"stride{stride}_{name}"
      for suffix in ("ratio", "wall_ratio", "bytes_ratio", "cpu_ms"):
        value = result[f"{key}_{suffix}"]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (
            key, suffix, value)
      assert rows[name]["bytes"] == expected[name], name
      assert result[f"{key}_bytes_ratio"] == expected[name] / expected["pixels"], name
    assert result[f"stride{stride}_pixels_ratio"] == 1.0
    # The dense frame difference adds exactly t * K * S * S * 3 bytes, K = stride - 1 here.
    assert (rows["frame_diff"]["bytes"] - rows["pixels"]["bytes"]
            == t * (stride - 1) * S * S * 3)
    assert rows["frame_diff"]["shapes"]["between"] == [[1, t, stride - 1, S, S, 3], "uint8"]
    for name in ("trajectory", "trajectory_mme", "all"):
      assert rows[name]["trajectory_valid_fraction"] > 0  # H.264 with vectors: tracked
  # At stride 4 MME's 4 steps are the default span: the same outputs.
  assert result["stride4_trajectory_bytes_ratio"] == result["stride4_trajectory_mme_bytes_ratio"]
  assert result["device_only_host_extra_cpu_ms"] == {"hog": 0.0, "frame_diff_sampled": 0.0}
  device = result["device_side"]["rows"]
  assert {(r["stride"], r["target"]) for r in device} == {
      (s, name) for s in (2, 4)
      for name in ("pixels", "hog", "frame_diff_sampled", "frame_diff_dense")}
  for r in device:
    assert math.isfinite(r["cpu_ms"]) and r["cpu_ms"] >= 0 and r["wall_ms"] > 0
