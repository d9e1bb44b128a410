"""Smoke test of benchmarks/bench_pipeline.py: it runs and ends with a complete JSON line.

No assertion on any timing: only that every mode ran and produced the documented fields.
"""

import json
import os
import pathlib
import subprocess
import sys

import av

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path, *args) -> dict:
  """Runs the benchmark with --small; returns its last stdout line, parsed."""
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"), "--small",
       f"--data_dir={tmp_path / 'videos'}", *args],
      capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_small_run_ends_with_json_line(tmp_path):
  result = _run(tmp_path)
  for field in ("cpu_count", "floor_clips_per_s", "rows", "c_over_a", "clips_per_s",
                "min_efficiency", "profile"):
    assert field in result, field
  assert set(result["c_over_a"]) >= {"stride2", "stride4"}
  modes = {(r["mode"], r["bframes"], r["repeats"]) for r in result["rows"]}
  assert modes >= {("threads", 0, 1), ("threads", 0, 2), ("threads", 3, 1), ("workers", 0, 1)}
  for row in result["rows"]:
    assert row["clips_per_s"] > 0 and row["efficiency"] > 0
    assert (row.get("threads") or row.get("workers")) >= 1
  assert result["clips_per_s"] > 0 and result["floor_clips_per_s"] > 0
  assert result["profile"]["cprofile_top_own_time"]
  # The videos are kept in --data_dir; the B-frame set has B-frames, the prepared one none.
  assert (tmp_path / "videos" / "prepared.txt").exists()
  assert _picture_types(tmp_path / "videos" / "bframes" / "v000.mp4") >= {"I", "P", "B"}
  assert _picture_types(tmp_path / "videos" / "prepared" / "v000.mp4") == {"I", "P"}

  # The accelerator suite's call: one thread count, reusing the videos; it reads clips_per_s.
  single = _run(tmp_path, "--threads=2", "--num_clips=4")
  assert {r["threads"] for r in single["rows"]} == {2}
  assert single["clips_per_s"] > 0 and single["profile"] is None


def _picture_types(path) -> set[str]:
  with av.open(str(path)) as container:
    return {av.video.frame.PictureType(f.pict_type).name for f in container.decode(video=0)}
