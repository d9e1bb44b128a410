"""Smoke test of benchmarks/bench_mask.py: it runs with --small, times every option, and its
Markdown table and final JSON line agree. No assertion on any timing's size."""

import json
import math
import os
import pathlib
import subprocess
import sys

from mgm_jax import masking

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path) -> tuple[list[str], dict]:
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mask.py"), "--small"],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  return lines, json.loads(lines[-1])


def test_small_run_times_every_option_and_the_table_matches_the_json(tmp_path):
  lines, result = _run(tmp_path)
  assert result["benchmark"] == "mask" and result["small"] is True
  assert result["grid"] == [8, 14, 14] and result["motion_shape"] == [8, 28, 28]
  expected = ["random", "tube", "block", "smm", "smm_sparse"] + [
      f"{s}/{p}/s{k}" for s in masking.MOTION_STRATEGIES for p in masking.POOLS for k in (0, 1)]
  rows = result["rows"]
  assert [r["option"] for r in rows] == expected
  for row in rows:
    for key in ("ms_per_clip", "min_ms_per_clip", "cpu_ms_per_clip"):
      assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, row
    assert row["min_ms_per_clip"] <= row["ms_per_clip"]
    if "/" in row["option"]:
      assert row["option"] == f'{row["strategy"]}/{row["pool"]}/s{row["smooth"]}'
  assert result["ms_per_clip"] == {r["option"]: r["ms_per_clip"] for r in rows}
  assert result["max_ms_per_clip"] == max(r["ms_per_clip"] for r in rows)
  assert result["max_cpu_ms_per_clip"] == max(r["cpu_ms_per_clip"] for r in rows)
  assert result["over_target"] == [r["option"] for r in rows
                                   if r["ms_per_clip"] > result["target_ms"]]
  table = [line.strip("|").split("|") for line in lines if line.startswith("| ")][1:]
  assert [cells[0].strip() for cells in table] == expected
  for cells, row in zip(table, rows):
    assert float(cells[1]) == round(row["ms_per_clip"], 4)
