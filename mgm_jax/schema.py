"""The one config schema: every field of a run, defined once with its meaning.

`defaults()` is the paper's pretraining recipe (MGM, Appendix A, Table 5: ViT-B, 16 x 224^2,
motion-guided masks at ratio 0.75, AdamW (0.9, 0.95), base lr 1.5e-4 x batch / 256, 40 warmup
epochs, cosine). `model.num_classes > 0` turns the same run into finetuning (the classifier,
trained on labels; Table 6): the fields marked "finetuning" apply then, at VideoMAE's values,
and `finetune_defaults()` sets the rest of the finetuning recipe. An experiment file in
configs/ starts from one of them and overrides only what differs:

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
    "init", "init_step", "eval",
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
  # Finetuning: the weights to start from (a fresh run only; a resumed run reads its checkpoint):
  # a mgm-jax workdir (pretraining or finetuning), a Hugging Face VideoMAE folder, an official
  # VideoMAE .pth (pretrain or finetune), or "" (random init). Its encoder must match model.*
  # in width and depth; frames and image size may differ (the position table is rebuilt).
  c.init = ""
  c.init_step = -1  # init is a workdir: its checkpoint at this step (-1: the latest)

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
      num_classes=0,  # 0: pretrain the autoencoder; > 0: finetune the classifier on labels
      head_init_scale=0.001,  # finetuning: classifier head init = trunc-normal(0.02) x this
      head_dropout=0.0,  # finetuning: dropout before the head (VideoMAE fc_drop_rate)
      # Pretraining variants (mgm_jax/targets.py). MAM2: a regressor of this many
      # cross-attention blocks (mask queries attend to the visible features) before the
      # decoders; 0 = VideoMAE's mask token.
      regressor_depth=0,
      motion_decoder=False,  # MAM2: the motion terms (frame_diff, trajectory) on a 2nd decoder
      # Encoder attention: joint (VideoMAE: every token with every token) | divided
      # (TimeSformer's divided space-time: temporal then spatial attention per block; JAX-only,
      # not exportable to PyTorch; the decoder stays joint). Table 4a.
      attention="joint",
  ))
  c.mask = ml_collections.ConfigDict(dict(
      strategy="mgm",  # random | tube | block | smm | smm_sparse | mgm | mgm_sparse
      ratio=0.75,  # fraction of tokens masked (MGM: 0.75; VideoMAE tube: 0.9)
      jitter=1.0,  # MGM box-centre jitter, in tokens (paper Table 4c)
      # MGM's box centre per slot (mgm, mgm_sparse): top1 (the paper's Eq. 7: the arg-max motion
      # cell) | box (where a box of the mask's size covers the most motion) | centroid (the
      # motion-weighted mean position)
      pool="top1",
      smooth=0,  # MGM: average each slot's motion map with the slots within +-smooth first
  ))
  # Pretraining: the weight of each reconstruction term (0 = off; mgm_jax/targets.py).
  c.loss = ml_collections.ConfigDict(dict(
      pixels=1.0,  # VideoMAE's pixel target
      norm_pix=True,  # ... normalised per patch and channel (False: raw [0, 1] pixels)
      frame_diff=0.0,  # MotionMAE / MAM2: signed differences of adjacent frames per tubelet
      frame_diff_dense=True,  # ... of every frame in the span (stride > 1 decodes the frames
      #                         between sampled ones); False: of the sampled frames only
      frame_diff_norm=True,  # ... normalised per patch and channel like the pixels
      trajectory=0.0,  # MME: point trajectories through the codec's motion vectors
      trajectory_points=2,  # ... points per patch side (MME: 2, the 8 px cell centres)
      trajectory_steps=0,  # ... frame steps tracked from each tubelet's first frame (MME: 4);
      #                      0 = the tubelet's span, (tubelet - 1) x stride
      trajectory_scale=1.0,  # ... px/frame that count as 1 in the target (not patch_norm)
      # ... False: per step the patch's mean motion and each point's deviation from it; True:
      # MME's code ('PatchStd'): the deviations only, divided by their std over the points
      trajectory_patch_norm=False,
      hog=0.0,  # MaskFeat: per-patch HOG histograms (9 bins, 8 px cells, per channel)
      label_smoothing=0.1,  # finetuning: cross-entropy label smoothing
  ))
  # Finetuning: mixup / cutmix on device, one lambda per (micro-)batch, clips mixed with the batch
  # reversed, one cutmix box for every frame (timm Mixup, mode "batch", as VideoMAE).
  c.mixup = ml_collections.ConfigDict(dict(
      mixup_alpha=0.8,  # Beta(a, a) of mixup; 0 = off
      cutmix_alpha=1.0,  # Beta(a, a) of cutmix; 0 = off
      prob=1.0,  # probability that a batch is mixed at all
      switch_prob=0.5,  # with both on: probability of cutmix instead of mixup
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
      # window: num_frames frames `stride` apart | segments: one frame from each of num_frames
      # equal segments (TSN; VideoMAE's SSv2 finetuning and test). Evaluation uses the same.
      sampling="window",
      # multi_scale: VideoMAE pretraining's crop (`scales`) | random_resized: its finetuning crop
      # (area 0.08-1, aspect 3/4-4/3)
      crop="multi_scale",
      scales=(1.0, 0.875, 0.75, 0.66),  # multi-scale crop scales (VideoMAE)
      flip=False,  # random horizontal flip (off for SSv2: its labels depend on left/right)
      rand_augment_ops=0,  # finetuning: RandAugment ops per clip (VideoMAE: 4; 0 = off), the
      rand_augment_magnitude=7,  # same ops and magnitudes on every frame (magnitude std 0.5)
      erase_prob=0.0,  # finetuning: random erasing, one box per clip (VideoMAE: 0.25)
      # mv | frame_diff | flow (OpenCV DIS optical flow on the decoded frames; Table 4b) | auto
      # (vectors where the codec has them, else frame differences)
      motion="auto",
      # subtract each frame's camera motion (a robust affine fit on the cells that carry
      # vectors) before the magnitude
      compensate_camera=False,
      # motion="flow": OpenCV DIS preset, medium | fast | ultrafast (~13 / 3 / 2 ms per 320x240
      # frame pair on one CPU core; benchmarks/bench_flow.py)
      flow_preset="medium",
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
      layer_decay=1.0,  # finetuning: lr x layer_decay ** (depth + 1 - layer); 1 = off
      ema_decay=0.0,  # > 0: keep an EMA of the parameters (evaluated instead of them)
  ))
  # Evaluation of a classifier (model.num_classes > 0): single-view validation during training
  # (centre window / segment centres, centre crop), and the multi-view test at the end (VideoMAE:
  # temporal x spatial views, softmax averaged per video) written to <workdir>/eval/.
  c.eval = ml_collections.ConfigDict(dict(
      split="validation",  # the labelled split evaluated (SSv2 / K400: validation = the test)
      every_steps=0,  # single-view validation every N steps (and at the end); 0 = end only
      num_videos=0,  # validation on the first N videos of the split; 0 = all
      batch_size=8,  # videos per evaluation step (all processes); each brings all its views
      temporal_views=2,  # multi-view test: clips in time (VideoMAE: SSv2 2, others 5) ...
      spatial_views=3,  # ... times crops along the long side (VideoMAE: 3)
      final_test=True,  # run the multi-view test after training
      # Pretraining: a weighted kNN (k=20, cosine, T=0.07) of the eval.split videos (the
      # first eval.num_videos) against the first knn_train_videos of data.split, on frozen
      # mean-pooled features, every N steps (and at the end); 0 = off. Needs labelled data.
      knn_every_steps=0,
      knn_train_videos=1000,
  ))

  c.log_every = 50  # steps between metric lines (and non-finite / error-budget checks)
  c.image_every = 5000  # steps between reconstruction images; 0 = never
  c.checkpoint_every = 1000  # steps between checkpoints (also saved at the end and on SIGTERM)
  c.keep_checkpoints = 3  # newest checkpoints kept
  return c


def finetune_defaults(num_classes: int) -> ml_collections.ConfigDict:
  """The finetuning recipe shared by every data set (MGM Table 6 and VideoMAE's scripts).

  The classifier (`num_classes`) from ViT-B, AdamW (0.9, 0.999), weight decay 0.05, cosine to
  1e-6, drop path 0.1, layer decay 0.75, 5 warmup epochs, RandAugment m7 n4, random erasing
  0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1, VideoMAE's finetune crop, evaluation every
  2000 steps. The per-data-set columns of Table 6 (base lr, layer decay, repeated augmentation,
  warmup, epochs, flip, drop path, sampling) are set by each configs/*_finetune.py.

  `batch_size` counts clips: with `data.repeats` = R, a batch holds batch_size / R videos with R
  augmented clips each, and the lr scales with batch_size / 256. VideoMAE's lr scaling counts
  videos (its num_sample clips of one video are extra), so a config with R = 2 halves base_lr
  to match VideoMAE's lr at the same number of videos per step (see configs/ssv2_finetune.py).
  """
  c = defaults()
  c.epochs = 30
  c.batch_size = 128
  c.model.update(num_classes=num_classes, drop_path_rate=0.1)
  c.data.update(crop="random_resized", rand_augment_ops=4, erase_prob=0.25)
  c.optim.update(base_lr=1e-3, min_lr=1e-6, warmup_epochs=5.0, b2=0.999, layer_decay=0.75)
  c.checkpoint_every = 500
  c.eval.every_steps = 2000
  return c


def demo_scale(config: ml_collections.ConfigDict, total_steps: int = 800
               ) -> ml_collections.ConfigDict:
  """Puts a pretraining config on the CPU demo's scale (configs/demo.py, which explains the
  choice of data): the tiny model on 4 x 96^2 clips, 96 generated H.264 videos of coloured
  bars, batch 16, `total_steps` steps. The method fields (mask, loss, model variant) stay; any
  architecture override (e.g. a decoder width) is dropped for the tiny preset's."""
  keep = {k: config.model[k] for k in ("regressor_depth", "motion_decoder")}
  config.model = defaults().model
  config.model.update(size="tiny", num_frames=4, img_size=96, dtype="float32", **keep)
  config.total_steps = total_steps
  config.batch_size = 16
  config.accum_steps = 1
  config.data.update(
      source="synthetic", num_train_videos=0, num_synthetic_videos=96,
      synthetic=dict(height=128, width=160, num_frames=32, style="bands", num_objects=3,
                     object_size=(16, 32)),
      stride=2, flip=True, repeats=2, num_threads=2)
  config.optim.update(base_lr=0.08, warmup_steps=20)  # peak lr 5e-3 at batch 16
  config.log_every = 10
  config.image_every = 200
  config.checkpoint_every = 200
  config.keep_checkpoints = 2
  return config


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
