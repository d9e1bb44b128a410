r"""Frozen-encoder features of a run for a split, and the linear probe / kNN evaluation on them.

    python launch/extract_features.py --workdir=/runs/ssv2_pretrain [--step=N] \
        --splits=train,validation [--temporal_views=1 --spatial_views=1] [--out=DIR]
    python launch/extract_features.py --workdir=/runs/ssv2_pretrain --probe \
        --train_split=train --test_split=validation

Features: the encoder's tokens on the whole (unmasked) clip, mean-pooled (a pretraining run:
after the encoder's final norm; a finetuned classifier: what its head reads, after fc_norm),
one vector per video, averaged over its views. Written to OUT/<split>.npz (numpy only:
features [N, D] float32, labels [N], video_ids [N], meta JSON; `mgm_jax.probe.load_features`),
by default OUT = <workdir>/features/step<N>/. Videos that fail to decode are listed in
OUT/<split>.failed.txt and left out of the file.

`--probe` then runs, on the train and test features (extracted first if missing):
  * a weighted kNN (k=20, cosine, T=0.07) of the test videos against the train videos;
  * a linear probe swept over --lrs x --weight_decays, the setting chosen on a held-out
    --val_fraction of the TRAIN videos (never the test split), retrained on all train videos and
    reported once on the test split. Results in OUT/probe.json and one printed line.

Runs on all devices and processes (start it on every host as launch/main.py is started; process
0 writes the files). Expected failures print one line and exit 1.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from input_pipeline import host_malloc
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import features
from mgm_jax import inference
from mgm_jax import probe
from mgm_jax import train
from mgm_jax import workdir as workdir_lib
import distributed_flags  # launch/distributed_flags.py  # pylint: disable=g-bad-import-order
import data_flags  # launch/data_flags.py  # pylint: disable=g-bad-import-order

_WORKDIR = flags.DEFINE_string("workdir", None, "A pretraining or finetuning run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_WEIGHTS = flags.DEFINE_enum(
    "weights", "auto", list(inference.WEIGHTS), "The parameters, or their EMA (a run with "
    "optim.ema_decay > 0); auto: the EMA where the run keeps one.")
_SPLITS = flags.DEFINE_list("splits", [], "Splits to extract (besides --probe's).")
_TEMPORAL = flags.DEFINE_integer("temporal_views", 1, "Clips in time per video (averaged).")
_SPATIAL = flags.DEFINE_integer("spatial_views", 1, "Crops per clip (averaged).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Videos per step (all processes).")
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 0, "Only N videos of each split (evenly "
                                   "spaced).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default under the workdir).")
_PROBE = flags.DEFINE_bool("probe", False, "Run the kNN and linear probe evaluation.")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train", "--probe: the split trained on.")
_TEST_SPLIT = flags.DEFINE_string("test_split", "validation", "--probe: the split reported.")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.1, "--probe: train videos held out to "
                                   "choose the probe's lr / weight decay.")
_LRS = flags.DEFINE_list("lrs", ["0.01", "0.1", "1.0"], "--probe: learning rates swept.")
_WDS = flags.DEFINE_list("weight_decays", ["0", "0.001"], "--probe: weight decays swept.")
_EPOCHS = flags.DEFINE_integer("epochs", 50, "--probe: epochs of the linear probe.")
_K = flags.DEFINE_integer("k", 20, "--probe: kNN neighbours.")
_SEED = flags.DEFINE_integer("seed", 0, "--probe: seed of the held-out split and the probe.")


def extract(loaded, config, logdir: str, split: str, out: str) -> str:
  """Writes OUT/<split>.npz; returns its path."""
  path, written, failed = features.extract_split(
      loaded, config, train.make_source(config, logdir, split), os.path.join(out, f"{split}.npz"),
      temporal_views=_TEMPORAL.value, spatial_views=_SPATIAL.value, batch_size=_BATCH.value,
      num_videos=_NUM_VIDEOS.value, meta={"workdir": _WORKDIR.value, "split": split})
  print(f"{split}: {written} videos -> {path}"
        + (f" ({failed} failed to decode, listed in {split}.failed.txt)" if failed else ""))
  return path


def evaluate_probe(out: str, num_classes: int) -> dict:
  """kNN and the linear probe on OUT/<train_split>.npz and OUT/<test_split>.npz."""
  train_x, train_y, _, _ = probe.load_features(os.path.join(out, f"{_TRAIN_SPLIT.value}.npz"))
  test_x, test_y, _, _ = probe.load_features(os.path.join(out, f"{_TEST_SPLIT.value}.npz"))
  return features.probe_evaluation(
      train_x, train_y, test_x, test_y, num_classes, k=_K.value,
      val_fraction=_VAL_FRACTION.value, lrs=_LRS.value, weight_decays=_WDS.value,
      epochs=_EPOCHS.value, seed=_SEED.value)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  host_malloc.keep_freed_memory()  # fewer page faults per decoded clip
  distributed_flags.initialize_distributed()
  workdir = _WORKDIR.value
  try:
    ema = inference.uses_ema(workdir_lib.read_config(workdir), _WEIGHTS.value)
    loaded = inference.load(workdir, _STEP.value, ema=ema)
    config = loaded.config
    list_file = data_flags.point_data(config)
    if list_file is not None:  # the file's own split; the others: <split>.txt beside it
      config.data.split = os.path.splitext(os.path.basename(list_file))[0]
    _, logdir = workdir_lib.run_dirs(workdir)
    out = _OUT.value or os.path.join(logdir, "features", f"step{loaded.step}")
    splits = list(_SPLITS.value)
    if _PROBE.value:
      splits += [s for s in (_TRAIN_SPLIT.value, _TEST_SPLIT.value)
                 if s not in splits and not os.path.exists(os.path.join(out, f"{s}.npz"))]
    for split in splits:
      extract(loaded, config, logdir, split, out)
    if _PROBE.value and jax.process_index() == 0:
      labels = probe.load_features(os.path.join(out, f"{_TRAIN_SPLIT.value}.npz"))[1]
      num_classes = config.model.get("num_classes", 0) or int(labels.max()) + 1
      results = evaluate_probe(out, num_classes)
      with open(os.path.join(out, "probe.json"), "w", encoding="utf-8") as f:
        json.dump({"workdir": workdir, "step": loaded.step, **results}, f, indent=2)
      print(f"kNN (k={_K.value}) top-1 {results['knn']['top1']:.4f}  linear probe top-1 "
            f"{results['linear']['top1']:.4f} (lr {results['chosen']['lr']:g}, wd "
            f"{results['chosen']['weight_decay']:g}, chosen on {results['held_out_videos']} "
            f"held-out train videos)  on {results['test_videos']} {_TEST_SPLIT.value} videos "
            f"-> {out}/probe.json")
  except (OSError, ValueError, FloatingPointError, workdir_lib.WorkdirError,
          checkpoint_lib.CheckpointError) as e:
    sys.exit(f"extract_features: error: {e}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
