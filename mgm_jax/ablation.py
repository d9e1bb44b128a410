"""Ablations: one pretraining config swept over fields, each variant pretrained and evaluated.

launch/ablate.py is the command; this module does the work, so that a test (or a notebook) can
run a sweep in-process. A sweep is a list of axes, each a config field and its values
(`parse_axis("mask.strategy:random,tube,mgm", config)`); the variants are every combination of
the axes' values, times the seeds. Per variant, under <root>/<variant name>/:

  variant.json     the field values and the seed that make the variant (and its name)
  pretrain/        a pretraining workdir (config.json, checkpoints, metrics): the base config with
                   the variant's values and seed
  pretrain.json    the last logged pretraining metrics, written when the schedule is done
  features/        frozen features of the probe's train and test videos (mgm_jax/features.py)
  probe.json       kNN and linear-probe top-1/top-5 on them ("probe" in the evaluations)
  finetune/        a finetuning workdir started from pretrain/ ("finetune": the finetune config
                   with the variant's model.* values and seed; its multi-view test at the end)
  finetune.json    its test results
  failed.json      the error, if a stage of this variant failed (the sweep goes on)

Each stage is skipped when its JSON exists and resumes from its checkpoint otherwise, so a
stopped sweep continues where it stopped and a finished variant is never rerun. A stage's run
stopped by SIGTERM / preemption (saved, before its schedule's end) writes no JSON and stops the
sweep (`StoppedEarly`). variant.json also holds the variant's configs and probe options: a rerun
whose configs differ in a field that defines the run stops at once (`check_unchanged`) instead of
mixing old results into the table, and a pretraining that runs again (its JSON removed) first
removes the probe results and sets the finetuning run aside as stale. The sweep's
table (<root>/results.md and results.json) and plot (results.png) are rewritten from every
variant's files after each variant. On several processes (a pod, SLURM), every process runs the
same sweep in the same order (training and feature extraction are collective); process 0
writes the files and decides what is finished, and the others follow its decision.

Generated data (data.source=synthetic without data.root) are made once per sweep under
<root>/data/, one folder per data setting, and shared by the variants.

Seeds: a variant's `config.seed` drives its init, data order, crops and masks; several seeds per
variant (`seeds=`) give a mean and spread per row. Without `seeds` every variant takes the base
config's seed, so variants differ only by the swept values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import time
import traceback
from typing import Any, Callable, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from mgm_jax import features as features_lib
from mgm_jax import inference
from mgm_jax import probe
from mgm_jax import train
from mgm_jax import validate
from mgm_jax import workdir as workdir_lib

EVALUATIONS = ("probe", "finetune")


class SweepError(ValueError):
  """A sweep that cannot run as given (the message names the axis or the variant)."""


class StoppedEarly(RuntimeError):
  """A stage's run stopped before its schedule's end (SIGTERM, preemption) with a checkpoint:
  the sweep stops too, and the same command resumes it."""


@dataclasses.dataclass(frozen=True)
class Axis:
  field: str  # dotted config field, e.g. "mask.strategy"
  values: tuple[Any, ...]


@dataclasses.dataclass
class Variant:
  name: str
  values: dict[str, Any]  # field -> value
  seed: int
  config: ml_collections.ConfigDict  # the pretraining config


def _get(config, field: str):
  node = config
  for part in field.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise SweepError(f"--sweep {field}: the config has no field {field!r}")
    node = node[part]
  return node


def _set(config, field: str, value) -> None:
  *parents, leaf = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def _parse_value(field: str, text: str, like):
  text = text.strip()
  try:
    if isinstance(like, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(like, int):
      return int(text)
    if isinstance(like, float):
      return float(text)
    if isinstance(like, str):
      return text
  except ValueError:
    raise SweepError(f"--sweep {field}: {text!r} is not a {type(like).__name__}") from None
  raise SweepError(f"--sweep {field}: fields of type {type(like).__name__} cannot be swept "
                   "(only str, int, float and bool fields)")


def parse_axis(text: str, config) -> Axis:
  """'field:v1,v2,...' -> Axis, each value typed like the field's current value in `config`."""
  field, sep, values = text.partition(":")
  field = field.strip()
  if not sep or not field or not values.strip():
    raise SweepError(f"--sweep {text!r}: expected field:value1,value2,... "
                     "(e.g. mask.strategy:random,tube,mgm)")
  like = _get(config, field)
  parsed = tuple(_parse_value(field, v, like) for v in values.split(","))
  if len(set(parsed)) != len(parsed):
    raise SweepError(f"--sweep {field}: values repeat in {values!r}")
  return Axis(field, parsed)


def _format(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def variant_name(values: dict[str, Any], seed: int | None) -> str:
  """A folder name: 'mask.strategy=mgm,mask.ratio=0.9[,seed=1]' with '/' etc. made safe."""
  parts = [f"{k}={_format(v)}" for k, v in values.items()]
  if seed is not None:
    parts.append(f"seed={seed}")
  name = ",".join(parts) or "base"
  return "".join(c if c.isalnum() or c in "=,._-" else "_" for c in name)


def make_variants(base, axes: Sequence[Axis], seeds: Sequence[int] | None = None
                  ) -> list[Variant]:
  """Every combination of the axes' values (the first axis varies slowest), times the seeds."""
  fields = [a.field for a in axes]
  if len(set(fields)) != len(fields):
    raise SweepError(f"--sweep: a field is swept twice in {fields}")
  out = []
  for combo in itertools.product(*(a.values for a in axes)):
    for seed in (seeds if seeds else [None]):
      config = ml_collections.ConfigDict(base.to_dict())
      values = dict(zip(fields, combo))
      for field, value in values.items():
        _set(config, field, value)
      if seed is not None:
        config.seed = int(seed)
      out.append(Variant(variant_name(values, seed), values, int(config.seed), config))
  return out


def finetune_config(finetune_base, variant: Variant, pretrain_dir: str):
  """The finetune config of a variant: its model.* values and seed, initialised from its run."""
  config = ml_collections.ConfigDict(finetune_base.to_dict())
  for field, value in variant.values.items():
    if field.startswith("model."):  # the backbone's definition goes with its weights
      _set(config, field, value)
  config.seed = variant.seed
  config.init = pretrain_dir
  config.init_step = -1
  return config


def check(variants: Sequence[Variant], finetune_base=None) -> None:
  """Validates every variant's configs before anything runs (one line naming the variant)."""
  for v in variants:
    try:
      validate.validate(v.config, jax.device_count(), jax.process_count())
      if v.config.model.num_classes:
        raise validate.ConfigError("the ablation runner pretrains: model.num_classes must be 0")
      if finetune_base is not None:
        validate.validate(finetune_config(finetune_base, v, "/pretrained"),
                          jax.device_count(), jax.process_count())
    except validate.ConfigError as e:
      raise SweepError(f"variant {v.name}: {e}") from None


def _write_json(path: str, obj) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, default=float)
  os.replace(tmp, path)


def _read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _agreed(flag: bool) -> bool:
  """Process 0's value of `flag`, on every process."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any."""
  if jax.process_count() == 1:
    return flag
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


class _FailedElsewhere(RuntimeError):
  pass


def _stage(path: str, fn: Callable[[], dict], *, before_run: Callable[[], None] | None = None
           ) -> dict | None:
  """Runs `fn` unless `path` exists (process 0 decides); process 0 writes its result there.

  Returns None when the stage was skipped (finished before), else its result. A failure on any
  process (e.g. the probe, which only process 0 computes) is raised on every process, so they
  all leave the stage together instead of waiting for each other.
  """
  if _agreed(os.path.exists(path)):
    return None
  if before_run is not None and jax.process_index() == 0:
    before_run()
  tic = time.perf_counter()
  error = None
  try:
    result = dict(fn(), seconds=round(time.perf_counter() - tic, 1))
  except StoppedEarly:
    raise
  except Exception as e:  # pylint: disable=broad-except
    error = e
  if _any_process(error is not None):
    raise error if error is not None else _FailedElsewhere("failed on another process")
  if jax.process_index() == 0:
    _write_json(path, result)
  multihost_utils.sync_global_devices(f"ablation stage {path}")
  return result


def _result(path: str, ran: dict | None) -> dict:
  """A stage's result: what it returned, or (skipped) what it wrote (process 0)."""
  if ran is not None:
    return ran
  return _read_json(path) if jax.process_index() == 0 else {}


def _finished(last: dict, stage: str, run_dir: str) -> dict:
  if last.get("run_step", 0) < last.get("run_total_steps", 0):
    raise StoppedEarly(f"{stage} of {run_dir} stopped at step {last['run_step']} of "
                       f"{last['run_total_steps']} (saved): rerun the same command to resume")
  return {k: v for k, v in last.items() if isinstance(v, (int, float))}


def _pretrain(variant: Variant, run_dir: str) -> dict:
  return _finished(train.train(variant.config, run_dir), "pretraining", run_dir)


def _probe(run_dir: str, out_dir: str, *, train_split: str, test_split: str,
           train_videos: int, test_videos: int, batch_size: int, **probe_kwargs) -> dict:
  loaded = inference.load(run_dir)
  config = loaded.config
  _, logdir = workdir_lib.run_dirs(run_dir)
  arrays = {}
  for split, num in ((train_split, train_videos), (test_split, test_videos)):
    path = os.path.join(out_dir, f"{split}.npz")
    if not _agreed(os.path.exists(path)):
      features_lib.extract_split(loaded, config, train.make_source(config, logdir, split), path,
                                 batch_size=batch_size, num_videos=num,
                                 meta={"workdir": run_dir, "split": split})
      multihost_utils.sync_global_devices(f"features {path}")
    if jax.process_index() == 0:
      arrays[split] = probe.load_features(path)[:2]
  if jax.process_index() != 0:
    return {}
  (train_x, train_y), (test_x, test_y) = arrays[train_split], arrays[test_split]
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  result = features_lib.probe_evaluation(train_x, train_y, test_x, test_y, num_classes,
                                         **probe_kwargs)
  return {"knn_top1": result["knn"]["top1"], "knn_top5": result["knn"]["top5"],
          "linear_top1": result["linear"]["top1"], "linear_top5": result["linear"]["top5"],
          "train_split": train_split, "test_split": test_split, "step": loaded.step, **result}


def _finetune(config, run_dir: str) -> dict:
  out = _finished(train.train(config, run_dir), "finetuning", run_dir)
  metrics = os.path.join(workdir_lib.run_dirs(run_dir)[1], "eval",
                         f"{config.eval.split}-step{out['run_step']}", "metrics.json")
  if "test_top1" not in out and os.path.exists(metrics):  # tested before a restart
    m = _read_json(metrics)
    out.update(test_top1=m.get("top1"), test_top5=m.get("top5"))
  return out


def run_variant(variant: Variant, root: str, *, evaluations: Sequence[str] = ("probe",),
                finetune_base=None, probe_options: dict | None = None) -> dict:
  """Pretrains and evaluates one variant (each stage resumable); returns its row."""
  vdir = os.path.join(root, variant.name)
  if jax.process_index() == 0:
    os.makedirs(vdir, exist_ok=True)
    _write_json(os.path.join(vdir, "variant.json"),
                _variant_record(variant, finetune_base, evaluations, probe_options))
  row: dict[str, Any] = {"variant": variant.name, **variant.values, "seed": variant.seed}
  failed = os.path.join(vdir, "failed.json")
  stage = "pretrain"
  try:
    path = os.path.join(vdir, "pretrain.json")
    pre = _result(path, _stage(path, lambda: _pretrain(variant, os.path.join(vdir, "pretrain")),
                               before_run=lambda: _set_aside_downstream(vdir)))
    row["pretrain_loss"] = pre.get("loss")
    row["pretrain_seconds"] = pre.get("seconds")
    if "probe" in evaluations:
      stage = "probe"
      opts = dict(probe_options or {})
      path = os.path.join(vdir, "probe.json")
      res = _result(path, _stage(path, lambda: _probe(
          os.path.join(vdir, "pretrain"), os.path.join(vdir, "features"), **opts)))
      row.update({k: res.get(k) for k in ("knn_top1", "linear_top1")})
    if "finetune" in evaluations:
      stage = "finetune"
      ft = finetune_config(finetune_base, variant, os.path.join(vdir, "pretrain"))
      path = os.path.join(vdir, "finetune.json")
      res = _result(path, _stage(path, lambda: _finetune(ft, os.path.join(vdir, "finetune"))))
      row["finetune_top1"] = res.get("test_top1")
    if jax.process_index() == 0 and os.path.exists(failed):
      os.remove(failed)  # an earlier attempt failed; this one finished
  except (KeyboardInterrupt, SystemExit, StoppedEarly):
    raise
  except Exception as e:  # pylint: disable=broad-except
    # One broken variant (diverged, a data error, ...) must not stop the sweep: recorded, the
    # next one runs, and the command exits non-zero at the end.
    logging.error("variant %s failed in %s: %s", variant.name, stage, e)
    if jax.process_index() == 0:
      _write_json(failed, {"stage": stage, "error": f"{type(e).__name__}: {e}",
                           "traceback": traceback.format_exc()})
    row["failed"] = f"{stage}: {type(e).__name__}: {e}"
  return row


def _variant_record(variant: Variant, finetune_base, evaluations, probe_options) -> dict:
  """variant.json: what defines the variant's results (checked when the sweep is rerun)."""
  record = {"name": variant.name, "values": variant.values, "seed": variant.seed,
            "config": variant.config.to_dict()}
  if "probe" in evaluations:
    record["probe_options"] = dict(probe_options or {})
  if "finetune" in evaluations:
    record["finetune_config"] = finetune_config(finetune_base, variant, "<pretrain>").to_dict()
  return record


def _record_differences(saved: dict, now: dict) -> list[str]:
  """What changed since a variant's record was written (run-defining fields only)."""
  diffs = [f"config.{d}" for d in workdir_lib.config_differences(
      ml_collections.ConfigDict(saved["config"]), ml_collections.ConfigDict(now["config"]))]
  for key in ("probe_options", "finetune_config"):
    if key in saved and key in now:
      if key == "finetune_config":
        diffs += [f"finetune config.{d}" for d in workdir_lib.config_differences(
            ml_collections.ConfigDict(saved[key]), ml_collections.ConfigDict(now[key]))]
      elif saved[key] != now[key]:
        diffs.append(f"{key}: {saved[key]} -> {now[key]}")
  return diffs


def check_unchanged(variants: Sequence[Variant], root: str, finetune_base, evaluations,
                    probe_options) -> None:
  """A rerun in the same workdir must mean the same variants: stored results are reused only
  for the configs that made them (else SweepError naming the variant and the fields)."""
  for v in variants:
    path = os.path.join(root, v.name, "variant.json")
    if not os.path.exists(path):
      continue
    saved = _read_json(path)
    if "config" not in saved:
      continue
    diffs = _record_differences(
        saved, _variant_record(v, finetune_base, evaluations, probe_options))
    if diffs:
      raise SweepError(
          f"variant {v.name} in {root} was run with another config ({'; '.join(diffs[:4])}"
          f"{'; ...' if len(diffs) > 4 else ''}): use another --workdir, or remove "
          f"{os.path.join(root, v.name)} to rerun it")


def _set_aside_downstream(vdir: str) -> None:
  """Before a variant's pretraining (re)runs: results of earlier weights are stale. The
  features and probe are removed (cheap to redo); a finetuning run is renamed, not deleted."""
  for name in ("probe.json", "finetune.json"):
    if os.path.exists(os.path.join(vdir, name)):
      os.remove(os.path.join(vdir, name))
  if os.path.isdir(os.path.join(vdir, "features")):
    shutil.rmtree(os.path.join(vdir, "features"))
  if os.path.isdir(os.path.join(vdir, "finetune")):
    os.replace(os.path.join(vdir, "finetune"),
               os.path.join(vdir, f"finetune.stale-{time.strftime('%Y%m%d-%H%M%S')}"))


# The table's metric columns: (key, heading). Top-1 values are fractions in [0, 1].
METRICS = (("knn_top1", "kNN top-1"), ("linear_top1", "linear top-1"),
           ("finetune_top1", "finetune top-1"), ("pretrain_loss", "final loss"))


def _mean_std(values):
  vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
  if not vals:
    return None, None
  return float(np.mean(vals)), (float(np.std(vals)) if len(vals) > 1 else None)


def summarise(rows: Sequence[dict], axes: Sequence[Axis]) -> list[dict]:
  """One entry per combination of the axes' values: the mean (and std) of each metric over its
  seeds, in sweep order."""
  fields = [a.field for a in axes]
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(tuple(row.get(f) for f in fields), []).append(row)
  out = []
  for key, members in groups.items():
    entry = {**dict(zip(fields, key)), "seeds": [m["seed"] for m in members],
             "failed": [m["failed"] for m in members if "failed" in m]}
    for metric, _ in METRICS:
      entry[metric], entry[metric + "_std"] = _mean_std([m.get(metric) for m in members])
    out.append(entry)
  return out


def markdown_table(summary: Sequence[dict], axes: Sequence[Axis]) -> str:
  fields = [a.field for a in axes]
  metrics = [(k, h) for k, h in METRICS if any(s.get(k) is not None for s in summary)]
  head = fields + ["seeds"] + [h for _, h in metrics]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for s in summary:
    cells = [_format(s[f]) for f in fields] + [",".join(map(str, s["seeds"]))]
    for k, _ in metrics:
      mean, std = s.get(k), s.get(k + "_std")
      pct = k.endswith("top1")
      cell = "" if mean is None else (f"{100 * mean:.1f}" if pct else f"{mean:.4f}")
      if std is not None:
        cell += f" ± {100 * std:.1f}" if pct else f" ± {std:.4f}"
      cells.append(cell + (" (failed)" if s["failed"] and mean is None else ""))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n\nTop-1 in %; mean ± std over the seeds where there are several.\n"


def plot(summary: Sequence[dict], axes: Sequence[Axis], path: str) -> None:
  """Top-1 per variant: a line over a numeric axis (Fig. 4a's style), else bars (Table 4e's)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  metrics = [(k, h) for k, h in METRICS if k.endswith("top1")
             and any(s.get(k) is not None for s in summary)]
  fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(summary) + 2), 3.2), dpi=100)
  numeric = (len(axes) == 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                    for v in axes[0].values))
  labels = [", ".join(_format(s[a.field]) for a in axes) for s in summary]
  xs = np.arange(len(summary), dtype=float)
  for i, (k, heading) in enumerate(metrics):
    ys = np.array([np.nan if s.get(k) is None else 100 * s[k] for s in summary])
    err = np.array([0.0 if s.get(k + "_std") is None else 100 * s[k + "_std"] for s in summary])
    if numeric:
      ax.errorbar([s[axes[0].field] for s in summary], ys, yerr=err, marker="o", capsize=3,
                  label=heading)
    else:
      width = 0.8 / max(len(metrics), 1)
      ax.bar(xs + (i - (len(metrics) - 1) / 2) * width, ys, width, yerr=err, capsize=3,
             label=heading)
  if numeric:
    ax.set_xlabel(axes[0].field)
  else:
    ax.set_xticks(xs, labels, rotation=20 if len(summary) > 4 else 0, ha="right"
                  if len(summary) > 4 else "center")
    ax.set_xlabel(" x ".join(a.field for a in axes) or "variant")
  ax.set_ylabel("top-1 (%)")
  if metrics:
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_results(root: str, rows: Sequence[dict], axes: Sequence[Axis], meta: dict) -> str:
  """results.md / results.json / results.png under `root`; returns the Markdown table."""
  summary = summarise(rows, axes)
  table = markdown_table(summary, axes)
  _write_json(os.path.join(root, "results.json"),
              {**meta, "axes": [{"field": a.field, "values": list(a.values)} for a in axes],
               "variants": list(rows), "summary": summary})
  with open(os.path.join(root, "results.md.tmp"), "w", encoding="utf-8") as f:
    f.write(f"# Ablation: {meta.get('config', '')}\n\n{table}")
  os.replace(os.path.join(root, "results.md.tmp"), os.path.join(root, "results.md"))
  plot(summary, axes, os.path.join(root, "results.png"))
  return table


def _shared_synthetic(config, root: str, part: str) -> None:
  """Generated data (data.source=synthetic without a root) made once per sweep and data setting
  (by the first variant that needs it, from its seed), not once per variant workdir: variants
  that differ in anything but the generated data's fields see the same videos."""
  if config is None or config.data.source != "synthetic" or config.data.root:
    return
  key = json.dumps({"n": config.data.num_synthetic_videos, "held_out": config.eval.num_videos,
                    "synthetic": config.data.synthetic.to_dict()}, sort_keys=True)
  config.data.root = os.path.join(
      root, "data", f"{part}-{hashlib.sha1(key.encode()).hexdigest()[:10]}")


def check_evaluations(evaluations: Sequence[str], finetune_base) -> None:
  unknown = [e for e in evaluations if e not in EVALUATIONS]
  if unknown:
    raise SweepError(f"--eval {unknown}: choose from {EVALUATIONS}")
  if "finetune" in evaluations and finetune_base is None:
    raise SweepError("--eval=finetune needs --finetune_config")


def run_sweep(base, root: str, axes: Sequence[Axis], *, seeds: Sequence[int] | None = None,
              evaluations: Sequence[str] = ("probe",), finetune_base=None,
              probe_options: dict | None = None, meta: dict | None = None) -> list[dict]:
  """Runs every variant (skipping what is finished) and writes the table after each."""
  check_evaluations(evaluations, finetune_base)
  variants = make_variants(base, axes, seeds)
  for v in variants:
    _shared_synthetic(v.config, root, "pretrain")
  if finetune_base is not None:
    finetune_base = ml_collections.ConfigDict(finetune_base.to_dict())
    _shared_synthetic(finetune_base, root, "finetune")
  check(variants, finetune_base if "finetune" in evaluations else None)
  check_unchanged(variants, root, finetune_base, evaluations, probe_options)
  names = [v.name for v in variants]
  if len(set(names)) != len(names):
    raise SweepError(f"two variants share a name: {names}")
  if jax.process_index() == 0:
    os.makedirs(root, exist_ok=True)
  meta = dict(meta or {}, evaluations=list(evaluations), seeds=list(seeds or []))
  rows = []
  for i, variant in enumerate(variants):
    logging.info("ablation variant %d/%d: %s", i + 1, len(variants), variant.name)
    rows.append(run_variant(variant, root, evaluations=evaluations,
                            finetune_base=finetune_base, probe_options=probe_options))
    if jax.process_index() == 0:
      write_results(root, rows + [{"variant": v.name, **v.values, "seed": v.seed}
                                  for v in variants[i + 1:]], axes, meta)
  return rows
