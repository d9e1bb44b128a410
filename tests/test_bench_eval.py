"""Smoke test of benchmarks/bench_eval.py: it runs and ends with a complete JSON line.

No assertion on any timing: only that every part ran and produced the documented fields.
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path, *args) -> dict:
  """Runs the benchmark with --small; returns its last stdout line, parsed."""
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  # A plain run's devices: not the 8 fake CPU devices conftest.py gives the test process.
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "bench_eval.py"), "--small",
       f"--data_dir={tmp_path / 'videos'}", *args],
      capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_small_run_ends_with_json_line(tmp_path):
  result = _run(tmp_path)
  assert result["benchmark"] == "eval" and result["small"] is True
  for field in ("cpu_count", "devices", "model", "clip", "input_rows", "model_row", "e2e",
                "input_views_per_s", "model_views_per_s", "e2e_views_per_s",
                "e2e_videos_per_s", "wait_fraction"):
    assert field in result, field
  assert result["model"] == "tiny" and result["clip"] == "4x64"

  # (1) both protocols at 1 and 2 threads, over every video, with their view counts.
  rows = {(r["protocol"], r["threads"]): r for r in result["input_rows"]}
  assert set(rows) == {("ssv2", 1), ("ssv2", 2), ("k400", 1), ("k400", 2)}
  for (protocol, _), row in rows.items():
    assert row["views"] == {"ssv2": 6, "k400": 15}[protocol]
    assert row["videos"] == result["videos"]
    assert row["views_per_s"] > 0 and row["videos_per_s"] > 0 and row["cpu_ms_per_video"] > 0
    assert row["union_frames"] >= 4

  # (2) the model alone, a fixed batch of the e2e protocol's views.
  model = result["model_row"]
  assert model["calls"] >= 2  # tiny: many calls within --small's --model_seconds
  assert model["step_s"] > 0 and model["first_call_s"] > 0
  assert model["views_per_s"] > 0 and model["gflop_per_view"] > 0
  assert model["views_per_batch"] == model["batch_videos"] * 6

  # (3) end to end: every video once, the model's wait a fraction.
  e2e = result["e2e"]
  assert e2e["protocol"] == "ssv2" and e2e["threads"] == 2
  assert e2e["videos"] == result["videos"] and e2e["views"] == 6 * e2e["videos"]
  assert e2e["steps"] == -(-e2e["videos"] // e2e["batch_videos"])
  assert e2e["views_per_s"] > 0 and e2e["videos_per_s"] > 0 and e2e["model_s"] > 0
  assert 0 <= e2e["wait_fraction"] < 1 and 0 <= e2e["wait_fraction_steady"] < 1
  assert e2e["serial_views_per_s"] > 0 and e2e["bound_views_per_s"] > 0
  assert result["e2e_views_per_s"] > 0 and result["model_views_per_s"] > 0
  assert result["input_views_per_s"] > 0

  # The videos are kept in --data_dir.
  assert (tmp_path / "videos" / "test.txt").exists()
