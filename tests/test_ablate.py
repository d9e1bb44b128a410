"""The ablation runner: sweep parsing, variants, a tiny sweep end to end, resume and failures."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from mgm_jax import ablation
from mgm_jax import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_base():
  config = schema.load(os.path.join(REPO, "configs/ablate_demo.py:2"))
  config.data.update(num_synthetic_videos=16, num_threads=2)
  config.eval.num_videos = 8
  config.checkpoint_every = 2
  return config


def test_axis_values_take_the_fields_type():
  config = schema.defaults()
  assert ablation.parse_axis("mask.strategy:random, tube,mgm", config).values == (
      "random", "tube", "mgm")
  assert ablation.parse_axis("mask.ratio:0.75,0.9", config).values == (0.75, 0.9)
  assert ablation.parse_axis("total_steps:10,20", config).values == (10, 20)
  assert ablation.parse_axis("data.flip:true,False", config).values == (True, False)


@pytest.mark.parametrize("text, words", [
    ("mask.stratgy:random", "no field 'mask.stratgy'"),
    ("mask.ratio:0.75,high", "'high' is not a float"),
    ("mask.strategy", "expected field:value1"),
    ("mask.strategy:tube,tube", "values repeat"),
    ("data.scales:1,2", "cannot be swept"),
    ("mask:tube", "cannot be swept"),
])
def test_bad_axis_names_the_field(text, words):
  with pytest.raises(ablation.SweepError, match=words):
    ablation.parse_axis(text, schema.defaults())


def test_variants_are_every_combination_times_the_seeds():
  config = schema.defaults()
  axes = [ablation.parse_axis("mask.strategy:tube,mgm", config),
          ablation.parse_axis("mask.ratio:0.75,0.9", config)]
  variants = ablation.make_variants(config, axes, seeds=[0, 3])
  assert [v.name for v in variants[:3]] == [
      "mask.strategy=tube,mask.ratio=0.75,seed=0", "mask.strategy=tube,mask.ratio=0.75,seed=3",
      "mask.strategy=tube,mask.ratio=0.9,seed=0"]
  assert len(variants) == 8 and len({v.name for v in variants}) == 8
  last = variants[-1]
  assert (last.config.mask.strategy, last.config.mask.ratio, last.config.seed) == ("mgm", 0.9, 3)
  assert config.mask.strategy == "mgm" and config.mask.ratio == 0.75  # the base is untouched
  assert ablation.make_variants(config, [])[0].name == "base"


def test_finetune_config_takes_the_backbone_fields_and_seed_only():
  base = schema.defaults()
  variant = ablation.make_variants(base, [ablation.parse_axis("model.drop_path_rate:0.2", base),
                                          ablation.parse_axis("mask.ratio:0.9", base)],
                                   seeds=[5])[0]
  ft = ablation.finetune_config(schema.finetune_defaults(4), variant, "/runs/v/pretrain")
  assert ft.model.drop_path_rate == 0.2 and ft.seed == 5 and ft.init == "/runs/v/pretrain"
  assert ft.mask.ratio == schema.finetune_defaults(4).mask.ratio


def test_summary_averages_seeds_and_the_table_marks_failures():
  axes = [ablation.Axis("mask.strategy", ("tube", "mgm"))]
  rows = [{"variant": "a", "mask.strategy": "tube", "seed": 0, "knn_top1": 0.5},
          {"variant": "b", "mask.strategy": "tube", "seed": 1, "knn_top1": 0.7},
          {"variant": "c", "mask.strategy": "mgm", "seed": 0, "failed": "pretrain: boom"}]
  summary = ablation.summarise(rows, axes)
  assert summary[0]["knn_top1"] == pytest.approx(0.6)
  assert summary[0]["knn_top1_std"] == pytest.approx(0.1)
  assert summary[1]["knn_top1"] is None and summary[1]["failed"] == ["pretrain: boom"]
  table = ablation.markdown_table(summary, axes)
  assert "| tube | 0,1 | 60.0 ± 10.0 |" in table and "(failed)" in table


def test_tiny_sweep_runs_resumes_and_records_a_failure(tmp_path, monkeypatch):
  base = _tiny_base()
  axes = [ablation.parse_axis("mask.strategy:random,mgm", base)]
  root = str(tmp_path / "sweep")
  probe_options = dict(train_split="train", test_split="validation", train_videos=0,
                       test_videos=0, batch_size=8, epochs=2)
  real_pretrain = ablation._pretrain

  def pretrain_mgm_fails(variant, run_dir):
    if variant.values["mask.strategy"] == "mgm":
      raise RuntimeError("disk full")
    return real_pretrain(variant, run_dir)

  monkeypatch.setattr(ablation, "_pretrain", pretrain_mgm_fails)
  rows = ablation.run_sweep(base, root, axes, probe_options=probe_options)
  assert "failed" not in rows[0] and rows[1]["failed"] == "pretrain: RuntimeError: disk full"
  assert json.load(open(os.path.join(root, "mask.strategy=mgm", "failed.json")))["stage"] == (
      "pretrain")
  for key in ("knn_top1", "linear_top1", "pretrain_loss"):
    assert rows[0][key] is not None
  probe_json = json.load(open(os.path.join(root, "mask.strategy=random", "probe.json")))
  assert probe_json["train_videos"] == 16 and probe_json["test_videos"] == 8
  # The data were generated once for the sweep, not per variant.
  assert len(glob.glob(os.path.join(root, "data", "pretrain-" + "?" * 10, "train.txt"))) == 1
  assert not os.path.exists(os.path.join(root, "mask.strategy=random", "pretrain",
                                         "synthetic_videos"))

  saved = json.load(open(os.path.join(root, "mask.strategy=random", "pretrain", "config.json")))
  assert saved["mask"]["strategy"] == "random" and saved["data"]["root"].startswith(root)

  # Rerun: the finished variant is not touched again; the failed one now runs (its stages are
  # stand-ins here: the real ones ran above).
  calls = []
  monkeypatch.setattr(ablation, "_pretrain",
                      lambda variant, run_dir: calls.append(run_dir) or {"loss": 0.125})
  monkeypatch.setattr(ablation, "_probe",
                      lambda run_dir, out_dir, **o: calls.append(run_dir) or {"knn_top1": 0.75})
  rows = ablation.run_sweep(base, root, axes, probe_options=probe_options)
  assert calls == [os.path.join(root, "mask.strategy=mgm", "pretrain")] * 2
  assert all("failed" not in r for r in rows)
  assert not os.path.exists(os.path.join(root, "mask.strategy=mgm", "failed.json"))
  results = json.load(open(os.path.join(root, "results.json")))
  assert [s["mask.strategy"] for s in results["summary"]] == ["random", "mgm"]
  assert results["summary"][0]["knn_top1"] == rows[0]["knn_top1"] == probe_json["knn_top1"]
  assert results["summary"][1]["knn_top1"] == 0.75
  assert [v["seed"] for v in results["variants"]] == [0, 0]
  assert "| mgm | 0 | 75.0 |" in open(os.path.join(root, "results.md")).read()
  assert os.path.getsize(os.path.join(root, "results.png")) > 1000

  # The same workdir with another base config: refused before anything runs, naming the field.
  changed = _tiny_base()
  changed.loss.norm_pix = True
  with pytest.raises(ablation.SweepError, match="mask.strategy=random .*loss.norm_pix"):
    ablation.run_sweep(changed, root, axes, probe_options=probe_options)

  # A pretraining that runs again makes the variant's probe stale: it is removed and redone.
  vdir = os.path.join(root, "mask.strategy=random")
  os.remove(os.path.join(vdir, "pretrain.json"))
  monkeypatch.setattr(ablation, "_pretrain", lambda variant, run_dir: {"loss": 0.5})

  def probe_after_set_aside(run_dir, out_dir, **options):
    assert not os.path.exists(out_dir) and not os.path.exists(os.path.join(vdir, "probe.json"))
    calls.append(run_dir)
    return {"knn_top1": 0.25}

  monkeypatch.setattr(ablation, "_probe", probe_after_set_aside)
  calls = []
  rows = ablation.run_sweep(base, root, axes, probe_options=probe_options)
  assert calls == [os.path.join(vdir, "pretrain")]
  assert rows[0]["pretrain_loss"] == 0.5 and rows[0]["knn_top1"] == 0.25


def test_a_stage_stopped_early_stops_the_sweep_without_marking_it_done(tmp_path, monkeypatch):
  with pytest.raises(ablation.StoppedEarly, match="stopped at step 3 of 10"):
    ablation._finished({"loss": 1.0, "run_step": 3, "run_total_steps": 10}, "pretraining", "d")
  assert ablation._finished({"loss": 1.0, "run_step": 10, "run_total_steps": 10}, "p", "d")[
      "loss"] == 1.0
  base = schema.defaults()
  variant = ablation.make_variants(base, [])[0]
  monkeypatch.setattr(ablation.train, "train",
                      lambda config, run_dir: {"loss": 1.0, "run_step": 3, "run_total_steps": 10})
  with pytest.raises(ablation.StoppedEarly):
    ablation.run_variant(variant, str(tmp_path))
  assert os.listdir(tmp_path / "base") == ["variant.json"]  # no pretrain.json, no failed.json


def test_cli_stops_at_once_on_a_bad_variant(tmp_path):
  result = subprocess.run(
      [sys.executable, "launch/ablate.py", "--config=configs/ablate_demo.py:2",
       f"--workdir={tmp_path / 'w'}", "--sweep=mask.ratio:0.75,1.5"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert "error: variant mask.ratio=1.5: config.mask.ratio: 1.5" in result.stderr.splitlines()[-1]
  assert not os.path.exists(tmp_path / "w")
