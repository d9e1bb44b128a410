r"""Ablations: pretrains every variant of a config on a short schedule, evaluates each, tabulates.

    python launch/ablate.py --config=configs/ablate_demo.py --workdir=/tmp/mgm_ablate \
        --sweep=mask.strategy:random,tube,mgm
    python launch/ablate.py --config=configs/ucf101.py:100 --workdir=/runs/ablate_ucf \
        --sweep=mask.strategy:random,tube,block,smm,smm_sparse,mgm,mgm_sparse \
        --eval=probe,finetune --finetune_config=configs/ucf101_finetune.py:20 \
        --config.data.root=/data/ucf101 --seeds=0,1

`--sweep=field:v1,v2,...` (repeatable: every combination is run) takes any str / int / float /
bool field of the config, e.g. mask.strategy, mask.ratio (Fig. 4), mask.jitter (Table 4c),
mask.pool, mask.smooth, data.motion (Table 4b: mv vs flow), data.compensate_camera,
model.attention (Table 4a: joint vs divided), model.size, epochs. `--config.a.b=v` overrides the
base config as in launch/main.py. `--eval`: `probe` = kNN + linear probe on frozen features of
`--probe_train_split` / `--probe_test_split` (default: data.split / eval.split);
`finetune` = the `--finetune_config` run started from each variant's weights, with its multi-view
test (swept model.* fields and the seed are applied to it too).

Writes <workdir>/<variant>/ (a config and a workdir per stage, see mgm_jax/ablation.py),
<workdir>/results.md (the table), results.json (every number, the seeds) and results.png (the
plot), rewritten after every variant. Rerun the same command to resume: finished stages are not
rerun. On a pod or under SLURM start the same command on every process, as launch/main.py
(flags in launch/distributed_flags.py); process 0 writes the files.

Exit status: 0 when every variant finished, or when a stage was stopped by SIGTERM / preemption
(saved; the sweep stops there and the same command resumes it); 1 when any variant failed (each failure is in its
<variant>/failed.json and the table; the other variants still ran) or on a bad sweep/config, which
stops before anything runs with one line naming the axis, field or variant.
"""

import logging as pylogging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mgm_jax import ablation
from mgm_jax import schema
from mgm_jax import validate
import distributed_flags  # launch/distributed_flags.py  # pylint: disable=g-bad-import-order

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base pretraining config "
                                          "(configs/*.py[:arg]).", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the variants and the table go.")
_SWEEP = flags.DEFINE_multi_string("sweep", [], "field:value1,value2,... (repeatable).")
_SEEDS = flags.DEFINE_list("seeds", [], "Seeds per variant (default: the config's seed).")
_EVAL = flags.DEFINE_list("eval", ["probe"], f"Evaluations, from {ablation.EVALUATIONS}.")
_FINETUNE = flags.DEFINE_string("finetune_config", None, "--eval=finetune: the finetuning "
                                "config (configs/*_finetune.py[:arg]).")
_TRAIN_SPLIT = flags.DEFINE_string("probe_train_split", None, "Probe: the split it is trained "
                                   "on (default: data.split).")
_TEST_SPLIT = flags.DEFINE_string("probe_test_split", None, "Probe: the split reported "
                                  "(default: eval.split).")
_TRAIN_VIDEOS = flags.DEFINE_integer("probe_train_videos", 0, "Probe: only N train videos "
                                     "(evenly spaced; 0 = all).")
_TEST_VIDEOS = flags.DEFINE_integer("probe_test_videos", 0, "Probe: only N test videos.")
_BATCH = flags.DEFINE_integer("probe_batch_size", 16, "Probe: videos per feature step.")
_EPOCHS = flags.DEFINE_integer("probe_epochs", 50, "Probe: epochs of the linear probe.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate and list the variants; run nothing.")


class _QuietOrbax(pylogging.Filter):
  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def _exit(code: int) -> None:
  pylogging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access  # background threads cannot hold it


def _run() -> int:
  config = _CONFIG.value
  axes = [ablation.parse_axis(text, config) for text in _SWEEP.value]
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise ablation.SweepError(f"--seeds {_SEEDS.value}: expected integers") from None
  finetune_base = schema.load(_FINETUNE.value) if _FINETUNE.value else None
  variants = ablation.make_variants(config, axes, seeds)
  if _DRY_RUN.value:
    ablation.check_evaluations(_EVAL.value, finetune_base)
    ablation.check(variants, finetune_base if "finetune" in _EVAL.value else None)
    for v in variants:
      print(v.name)
    print(f"{len(variants)} variants: valid")
    return 0
  root = os.path.abspath(_WORKDIR.value)
  probe_options = dict(
      train_split=_TRAIN_SPLIT.value or config.data.split,
      test_split=_TEST_SPLIT.value or config.eval.split, train_videos=_TRAIN_VIDEOS.value,
      test_videos=_TEST_VIDEOS.value, batch_size=_BATCH.value, epochs=_EPOCHS.value)
  rows = ablation.run_sweep(
      config, root, axes, seeds=seeds, evaluations=_EVAL.value, finetune_base=finetune_base,
      probe_options=probe_options,
      meta={"config": config_flags.get_config_filename(flags.FLAGS["config"]),
            "sweep": list(_SWEEP.value), "finetune_config": _FINETUNE.value,
            "probe": probe_options, "argv": sys.argv})
  if jax.process_index() == 0:
    with open(os.path.join(root, "results.md"), encoding="utf-8") as f:
      print(f.read())
    print(f"-> {root}/results.md, results.json, results.png")
  failed = [r for r in rows if "failed" in r]
  for r in failed:
    print(f"error: variant {r['variant']} failed: {r['failed']}", file=sys.stderr)
  return 1 if failed else 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  try:
    distributed_flags.initialize_distributed()
    if jax.process_index() != 0:
      logging.set_verbosity(logging.WARNING)
    code = _run()
  except ablation.StoppedEarly as e:  # SIGTERM / preemption: saved; the same command resumes
    print(f"stopped early: {e}", file=sys.stderr)
    code = 0
  except (ablation.SweepError, validate.ConfigError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    code = 1
  _exit(code)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
