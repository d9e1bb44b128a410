"""The benchmarks' accounting (analytic FLOPs against a hand count and XLA's compiled step, the
peak table, the max-batch search) and the accelerator suite run end to end at tiny CPU shapes.
No test asserts on wall-clock time."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import types

import jax
import jax.numpy as jnp
import pytest

from mgm_jax import masking
from mgm_jax import model as model_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_bench():
  spec = importlib.util.spec_from_file_location(
      "bench_train_step", ROOT / "benchmarks" / "bench_train_step.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # defines no flags: those are defined under __main__ only
  return module


bench = _load_bench()

# N = 2x2x2 = 8 tokens, P = 2*16*16*3 = 1536, D_e = 8 (F_e = 32), D_d = 4 (F_d = 16).
_TINY = model_lib.ModelConfig(img_size=(32, 32), num_frames=4, encoder_dim=8, encoder_depth=1,
                              encoder_heads=2, decoder_dim=4, decoder_depth=1, decoder_heads=1)


def test_step_flops_matches_a_hand_count():
  batch, masked, visible = 3, 6, 2
  expected = {  # (backward factor) * 2 * m * n * k, per clip
      "patch_embed": 2 * 2 * visible * 1536 * 8,               # visible tokens only, no dgrad
      "encoder_linear": 3 * 2 * visible * (4 * 8 * 8 + 2 * 8 * 32),
      "encoder_attention": 3 * 2 * 2 * visible * visible * 8,  # QK^T and AV
      "encoder_to_decoder": 3 * 2 * visible * 8 * 4,
      "decoder_linear": 3 * 2 * 8 * (4 * 4 * 4 + 2 * 4 * 16),
      "decoder_attention": 3 * 2 * 2 * 8 * 8 * 4,
      "head": 3 * 2 * masked * 4 * 1536,                       # masked tokens only
  }
  parts = bench.step_flops(_TINY, batch, masked)
  assert parts.pop("total") == batch * sum(expected.values())
  assert parts == {k: batch * v for k, v in expected.items()}
  extra = bench.implementation_extra(_TINY, batch, masked, remat=True)
  assert extra["remat_recompute"] == batch * (  # forward of every block but fc2
      2 * visible * (4 * 8 * 8 + 8 * 32) + 2 * 2 * visible * visible * 8
      + 2 * 8 * (4 * 4 * 4 + 4 * 16) + 2 * 2 * 8 * 8 * 4)
  assert bench.implementation_extra(_TINY, batch, masked, remat=False)["remat_recompute"] == 0


def test_hlo_dot_flops_counts_plain_and_batched_matmuls():
  def f(a, b, c, d):
    return a @ b, jnp.einsum("bij,bjk->bik", c, d)

  args = [jnp.ones(s) for s in ((4, 8), (8, 16), (3, 4, 5), (3, 5, 6))]
  compiled = jax.jit(f).lower(*args).compile()
  assert bench.hlo_dot_flops(compiled.as_text()) == 2 * 4 * 8 * 16 + 2 * 3 * 4 * 5 * 6


@pytest.mark.parametrize("kind, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0),
                                        ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA A100-SXM4-80GB", 312.0), ("TPU v4", 275.0),
                                        ("TPU v5 lite", 197.0), ("TPU v5", 459.0),
                                        ("TPU v6 lite", 918.0), ("NVIDIA GeForce GTX 1080", None)])
def test_peak_table(kind, peak):
  platform = "tpu" if kind.startswith("TPU") else "gpu"
  assert bench.peak_tflops(types.SimpleNamespace(platform=platform, device_kind=kind)) == peak
  assert bench.peak_tflops(types.SimpleNamespace(platform="cpu", device_kind="H100")) is None


def test_max_batch_search_doubles_then_bisects():
  tried = []

  def fits(batch):
    tried.append(batch)
    return batch <= 100

  assert bench.search_max_batch(fits, 8, 1024, budget_s=1e9) == (96, 104, "oom")
  assert tried == [8, 16, 32, 64, 128, 96, 112, 104]
  assert bench.search_max_batch(lambda b: True, 2, 12, budget_s=1e9) == (12, None, "cap")
  assert bench.search_max_batch(lambda b: b <= 3, 16, 64, budget_s=1e9) == (3, 4, "oom")
  tried.clear()  # no time: one try, then stop
  assert bench.search_max_batch(fits, 8, 1024, budget_s=0.0) == (8, None, "time")
  assert tried == [8]


@pytest.mark.parametrize("remat", [False, True])
def test_compiled_step_flops_match_the_analytic_count(remat):
  """XLA's dot FLOPs equal the analytic count plus the itemised extras; its total is near."""
  cfg = dataclasses.replace(model_lib.model_config("tiny", num_frames=4, img_size=(32, 32),
                                                   encoder_depth=1, decoder_depth=1),
                            remat=remat)
  masked = masking.num_masked("mgm", cfg.grid, 0.75)
  frames, mask = bench._batch(cfg, 2, masked)  # pylint: disable=protected-access
  *_, compiled = bench.jax_runner(cfg, frames, mask, masked, compile_only=True)
  total, dots = bench.xla_flops(compiled)
  analytic = bench.step_flops(cfg, 2, masked)["total"]
  extra = sum(bench.implementation_extra(cfg, 2, masked, remat).values())
  assert dots / (analytic + extra) == pytest.approx(1.0, abs=0.01)
  # + norms, softmax, GELU, loss, AdamW: a large share at this tiny width (1.7x measured)
  assert 1.0 <= total / (analytic + extra) < 2.0


def _small_suite_env(results: pathlib.Path) -> dict:
  env = dict(os.environ, RESULTS=str(results))
  # conftest fakes 8 CPU devices for the sharding tests; the suite measures one real device.
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return env


@pytest.mark.benchmark  # ~60 s: outside the suite's budget; .ci/run runs it after the suite
def test_accelerator_suite_small_runs_end_to_end(tmp_path):
  results = tmp_path / "results.md"
  results.write_text("# existing\n")
  proc = subprocess.run(["bash", "benchmarks/accelerator_suite.sh", "--small"], cwd=ROOT,
                        env=_small_suite_env(results), capture_output=True, text=True,
                        timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  text = results.read_text()
  assert text.startswith("# existing\n")  # appended, not overwritten
  assert "accelerator suite on cpu (--small" in text
  assert "| run | model | remat | attention |" in text
  block = text.split("```\n")[1]
  records = [json.loads(line) for line in block.splitlines()]
  train = [r for r in records if r["benchmark"] == "train_step"]
  assert [r["remat"] for r in train] == [False, True, False, True]
  for r in train:
    assert r["backend"] == "cpu" and r["local_devices"] == 1 and r["attention"] == "xla"
    assert r["clips_per_s"] > 0 and r["step_ms"] > 0 and r["mfu"] is None
    assert r["gflop_per_step"] > 0 and r["xla_gflop_per_step"] > 0 and math.isfinite(r["loss"])
  (search,) = [r for r in records if r["benchmark"] == "max_batch"]
  assert (search["max_batch"], search["limited_by"]) == (4, "cap")
  assert [t[:2] for t in search["tries"]] == [[2, True], [4, True]]
  summary = records[-1]
  assert summary["benchmark"] == "accelerator_suite" and summary["failed"] == []
  assert summary["B_max_batch"] == 4 and summary["device"] == "cpu"
  if (ROOT / "benchmarks" / "bench_pipeline.py").exists():
    assert summary["pipeline_clips_per_s"] > 0
    assert summary["ratio_pipeline_over_train_B"] == pytest.approx(
        summary["pipeline_clips_per_s"] / summary["B_clips_per_s"], rel=0.01)
  else:
    assert "pipeline" in summary["skipped"][0]
    assert "bench_pipeline.py does not exist yet" in proc.stdout
