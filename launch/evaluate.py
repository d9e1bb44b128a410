r"""Evaluates a finetuned classifier: VideoMAE's multi-view test on any checkpoint of a run.

    python launch/evaluate.py --workdir=/runs/ssv2_ft [--step=N | --best] [--weights=auto] \
        [--split=validation] [--temporal_views=2] [--spatial_views=3] [--batch_size=8] \
        [--num_videos=0] [--out=DIR]

The views default to the run's eval.* (VideoMAE: 2 x 3 for SSv2, 5 x 3 for the others); the
data to the run's data.* (where the videos lie may be changed with --list_file, --data_root,
--prepared_dir). Writes OUT/metrics.json (top-1/top-5 with and without videos that failed to
decode, per-class accuracy, the failed videos) and OUT/predictions.jsonl (video id, label,
top-5 with scores), by default to <workdir>/eval/<split>-step<N>[-best][-ema]/.

Cross-data-set evaluation (MGM Table 3: finetune on a source data set, test on a target):
point the data at the target (--data_source, --dataset, --data_root / --list_file /
--prepared_dir) and give --class_map, a file of `source_class target_class` lines (names or
0-based indices; see mgm_jax/evaluate.py). Only the mapped source classes compete; target videos
of unmapped classes are left out and counted.

A released VideoMAE classifier is evaluated by importing it first (launch/import_torch.py).
Runs on all devices and processes (each process loads its share of the videos and process 0
writes the report): start it on every host as launch/main.py is started (the same
--coordinator_address / --num_processes / --process_id flags, or a SLURM / TPU environment).
Expected failures print one line and exit 1.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from input_pipeline import host_malloc
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import evaluate
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import sharding
from mgm_jax import train
from mgm_jax import workdir as workdir_lib
import distributed_flags  # launch/distributed_flags.py  # pylint: disable=g-bad-import-order
import data_flags  # launch/data_flags.py  # pylint: disable=g-bad-import-order

_WORKDIR = flags.DEFINE_string("workdir", None, "A finetuning run (model.num_classes > 0).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BEST = flags.DEFINE_bool("best", False, "Evaluate the best validation checkpoint instead.")
_WEIGHTS = flags.DEFINE_enum(
    "weights", "auto", list(inference.WEIGHTS), "The parameters, or their EMA (a run with "
    "optim.ema_decay > 0); auto: the EMA where the run keeps one, as its own evaluation does.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval.split).")
_TEMPORAL = flags.DEFINE_integer("temporal_views", None, "Clips in time (default: eval.*).")
_SPATIAL = flags.DEFINE_integer("spatial_views", None, "Crops per clip (default: eval.*).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Videos per step (default: eval.batch_size).")
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 0, "Evaluate only N videos (evenly spaced).")
_CLASS_MAP = flags.DEFINE_string("class_map", None, "Source -> target class mapping file.")
_OUT = flags.DEFINE_string("out", None, "Report directory (default under the workdir).")


def run(workdir: str) -> tuple[dict, str]:
  """Evaluates as the flags say; returns (metrics, report directory)."""
  ema = inference.uses_ema(workdir_lib.read_config(workdir), _WEIGHTS.value)
  loaded = inference.load(workdir, _STEP.value, ema=ema, best=_BEST.value)
  config = loaded.config
  if not isinstance(loaded.model, model_lib.VideoClassifier):
    raise ValueError(f"{workdir}: not a finetuning run (model.num_classes is 0); pretrained "
                     "encoders are evaluated with launch/extract_features.py --probe")
  d, e = config.data, config.eval
  _, logdir = workdir_lib.run_dirs(workdir)
  class_map = None
  if _CLASS_MAP.value:  # the source's class names, before the data points at the target
    source_names = train.class_names(train.make_source(config, logdir, d.split))
    num_classes = config.model.num_classes
  split = _SPLIT.value or e.split
  if data_flags.point_data(config) is not None:  # that very list file is the split evaluated
    d.split = split
  temporal, spatial = _TEMPORAL.value or e.temporal_views, _SPATIAL.value or e.spatial_views
  batch = _BATCH.value or e.batch_size
  batch -= batch % jax.device_count() or 0
  batch = max(batch, jax.device_count())
  suffix = ("-best" if _BEST.value else "") + ("-ema" if ema else "")
  out = _OUT.value or os.path.join(logdir, "eval", f"{split}-step{loaded.step}{suffix}")
  mesh = sharding.make_mesh(-1, 1)
  source = train.make_source(config, logdir, split)
  names = train.class_names(source)
  if _CLASS_MAP.value:
    class_map = evaluate.read_class_map(_CLASS_MAP.value, num_classes, source_names, names)
  spec = evaluate.eval_spec(config, temporal, spatial)
  forward = evaluate.make_forward(loaded.model, mesh)
  from flax import nnx  # pylint: disable=g-import-not-at-top
  params = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
  preds = evaluate.predict(forward, params, source, spec, mesh, batch_size=batch,
                           num_videos=_NUM_VIDEOS.value, num_threads=d.num_threads)
  results = evaluate.metrics(preds, names, class_map)
  if jax.process_index() == 0:
    evaluate.write_report(out, preds, results, None if class_map is not None else names, extra={
        "workdir": workdir, "step": loaded.step, "best": _BEST.value, "ema": ema,
        "split": split, "temporal_views": temporal, "spatial_views": spatial,
        "data": {k: d[k] for k in ("source", "dataset", "root", "list_file", "prepared_dir")},
        "class_map": _CLASS_MAP.value})
  return results, out


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  host_malloc.keep_freed_memory()  # fewer page faults per decoded clip
  distributed_flags.initialize_distributed()
  try:
    results, out = run(_WORKDIR.value)
  except (OSError, ValueError, workdir_lib.WorkdirError, checkpoint_lib.CheckpointError) as e:
    sys.exit(f"evaluate: error: {e}")
  print(f"top-1 {results['top1']:.4f}  top-5 {results['top5']:.4f}  over {results['decoded']} "
        f"videos ({results['failed']} failed to decode; with them counted wrong: top-1 "
        f"{results['top1_all']:.4f})  {results['views']} views per video, "
        f"{jax.process_count()} process(es) -> {out}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
