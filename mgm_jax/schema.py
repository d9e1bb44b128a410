"""The one config schema: every field of a run, defined once with its meaning.

`defaults()` is the paper's pretraining recipe (MGM, Appendix A, Table 5: ViT-B, 16 x 224^2,
motion-guided masks at ratio 0.75, AdamW (0.9, 0.95), base lr 1.5e-4 x batch / 256, 40 warmup
epochs, cosine). An experiment file in configs/ starts from it and overrides only what differs:

    from mgm_jax import schema

    def get_config(arg=None):
      config = schema.defaults()
      config.data.update(stride=4, flip=True, num_train_videos=240_000)
      return config

`validate.validate` rejects any field not defined here, naming it. `load("configs/x.py:arg")`
reads an experiment file with the same parser `--config=` uses (ml_collections config_flags).
"""

from __future__ import annotations

import sys

from absl import flags
import ml_collections
from ml_collections import config_flags

# Fields a resumed run may change: how long and how fast the run goes, where it logs, where the
# (same) data lies. Every other field defines the run; resuming with another value is refused
# (see `workdir.check_resumable`). Dotted prefixes cover a whole section.
RESUMABLE = (
    "total_steps", "epochs", "accum_steps", "mesh", "resume_step", "restore_fallback",
    "log_every", "image_every", "checkpoint_every", "keep_checkpoints",
    "model.remat", "model.attention_impl",
    "data.root", "data.list_file", "data.prepared_dir", "data.num_threads", "data.num_workers",
    "data.prefetch", "data.max_skipped_fraction", "data.max_consecutive_failures",
)


def defaults() -> ml_collections.ConfigDict:
  """Every field, at the paper's pretraining recipe (SSv2-style data settings)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # everything random (init, shuffle, crops, masks, drop path) derives from it
  c.epochs = 800  # schedule length in epochs of data.num_train_videos; used if total_steps <= 0
  c.total_steps = -1  # > 0: the schedule length in steps (overrides epochs)
  c.batch_size = 512  # global clips per step: all processes and micro-batches together
  c.accum_steps = 1  # gradient accumulation: batch_size / accum_steps clips per micro-batch
  c.resume_step = -1  # -1: resume from the latest checkpoint; N: from step N (later ones are
  #                     set aside as <step>.set-aside-<time>, not deleted)
  c.restore_fallback = False  # latest checkpoint unreadable: resume from the newest good one

  # Device mesh: data-parallel x FSDP (parameters sharded by shape); -1 = all remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

  c.model = ml_collections.ConfigDict(dict(
      size="B",  # preset: tiny | S | B | L | H (mgm_jax.model.SIZES); the fields below win
      num_frames=16,  # frames per clip
      img_size=224,  # square crop side in pixels
      tubelet=2,  # frames per token
      patch=16,  # pixels per token side
      drop_path_rate=0.0,  # stochastic depth of the last block (VideoMAE pretraining: 0)
      dtype="bfloat16",  # compute dtype: float32 | bfloat16 (parameters stay float32)
      remat=False,  # rematerialise each block in the backward pass (memory for compute)
      attention_impl="",  # "" (XLA) | xla | cudnn (fused attention on NVIDIA GPUs, bfloat16)
  ))
  c.mask = ml_collections.ConfigDict(dict(
      strategy="mgm",  # random | tube | block | smm | smm_sparse | mgm | mgm_sparse
      ratio=0.75,  # fraction of tokens masked (MGM: 0.75; VideoMAE tube: 0.9)
      jitter=1.0,  # MGM box-centre jitter, in tokens (paper Table 4c)
  ))
  c.loss = ml_collections.ConfigDict(dict(
      norm_pix=True,  # VideoMAE's per-patch normalised pixel target (False: raw [0, 1] pixels)
  ))
  c.data = ml_collections.ConfigDict(dict(
      # synthetic: generated H.264 videos | list: a VideoMAE list file ('path label' lines) |
      # prepared: ArrayRecord shards from launch/prepare_data.py | raw: a data set's own layout.
      source="list",
      list_file="",  # list: the list file
      root="",  # list/raw: folder the paths start from; synthetic: "" = <workdir>/synthetic_videos
      prepared_dir="",  # prepared: the --out of launch/prepare_data.py
      dataset="ssv2",  # prepared/raw: ssv2 | k400 | ucf101 | hmdb51 | diving48 | list
      split="train",
      fold=1,  # official split number (UCF101, HMDB51)
      num_train_videos=168_913,  # epoch length in videos (0: the source's length); SSv2 train
      num_synthetic_videos=0,  # synthetic: how many videos to generate
      synthetic=ml_collections.ConfigDict(dict(  # synthetic: input_pipeline.synthetic.make_video
          height=128, width=160, num_frames=32)),
      stride=2,  # frame sampling stride (SSv2: 2, K400: 4)
      scales=(1.0, 0.875, 0.75, 0.66),  # multi-scale crop scales (VideoMAE)
      flip=False,  # random horizontal flip (off for SSv2: its labels depend on left/right)
      motion="auto",  # mv | frame_diff | auto (vectors where the codec has them)
      compensate_camera=False,  # subtract each frame's dominant motion before the magnitude
      repeats=1,  # repeated sampling: crops and masks per decoded video
      num_threads=16,  # decoding threads per process
      num_workers=0,  # > 0: decode in that many worker processes instead
      prefetch=2,  # batches decoded ahead
      max_skipped_fraction=0.01,  # error budget: stop if more of the videos are broken
      max_consecutive_failures=200,  # stop at once after this many broken videos in a row
  ))
  c.optim = ml_collections.ConfigDict(dict(
      base_lr=1.5e-4,  # peak lr = base_lr x batch_size / 256
      min_lr=1e-5,  # final lr, scaled the same way
      warmup_epochs=40.0,  # linear warmup, in epochs ...
      warmup_steps=-1,  # ... or in steps when >= 0
      b1=0.9, b2=0.95,  # AdamW betas
      weight_decay=0.05,  # on weight matrices only (not biases, norms, mask token)
      grad_clip=0.0,  # global-norm clipping; 0 = off (VideoMAE pretraining)
  ))

  c.log_every = 50  # steps between metric lines (and non-finite / error-budget checks)
  c.image_every = 5000  # steps between reconstruction images; 0 = never
  c.checkpoint_every = 1000  # steps between checkpoints (also saved at the end and on SIGTERM)
  c.keep_checkpoints = 3  # newest checkpoints kept
  return c


def load(spec: str, *overrides: str, lock: bool = False) -> ml_collections.ConfigDict:
  """`path.py[:arg]` -> that file's `get_config(arg)` with `--config.a.b=v` overrides applied.

  Exactly what launch/main.py's `--config=` flag loads (ml_collections config_flags, on a flag
  registry of its own); unlocked unless `lock`, so Python callers may add fields.
  """
  argv = ["load", f"--config={spec}", *overrides]
  saved, sys.argv = sys.argv, argv  # config_flags reads the overrides from sys.argv
  try:
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "config file", flag_values=values,
                                             lock_config=lock)
    values(argv)
    return holder.value
  finally:
    sys.argv = saved
