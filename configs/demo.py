r"""The CPU demo: a tiny ViT MAE pretrained with motion-guided masks on generated H.264 videos.

Creates its own data (synthetic textured objects moving on textured backgrounds, real H.264 files
with motion vectors) under the workdir, then trains a few hundred steps on CPU:

    python launch/main.py --config=configs/demo.py --workdir=/tmp/mgm_demo

`--config=configs/demo.py:STEPS` sets the number of steps (300 by default). The numbers say
nothing about the paper's accuracy claims: this checks that the whole system runs and learns.

The demo predicts raw pixels (`loss.norm_pix=False`) at a high learning rate. With VideoMAE's
per-patch normalised target (the paper's, used by ssv2.py / k400.py) the synthetic textures' fine
noise is unpredictable after normalisation: the loss only drops from ~1.08 to ~1.00 in 100-300
CPU steps, which shows little. `--config.loss.norm_pix=True` runs it that way.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.epochs = 1000  # unused: total_steps is set
  config.total_steps = int(arg) if arg else 300
  config.batch_size = 16
  config.accum_steps = 1

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

  config.model = ml_collections.ConfigDict(dict(
      size="tiny", num_frames=8, img_size=96, tubelet=2, patch=16, drop_path_rate=0.0,
      dtype="float32", remat=False))
  config.mask = ml_collections.ConfigDict(dict(strategy="mgm", ratio=0.75, jitter=1.0))
  config.loss = ml_collections.ConfigDict(dict(norm_pix=False))

  config.data = ml_collections.ConfigDict(dict(
      source="synthetic", list_file="", root="",  # root "": <workdir>/synthetic_videos
      num_train_videos=0,  # 0: the source's length
      num_synthetic_videos=96,
      synthetic=ml_collections.ConfigDict(dict(height=128, width=160, num_frames=32)),
      stride=2, scales=(1.0, 0.875, 0.75, 0.66), flip=True,
      motion="auto", compensate_camera=False,
      repeats=2,
      num_threads=2, num_workers=0, prefetch=2,
      max_skipped_fraction=0.01,
  ))
  config.optim = ml_collections.ConfigDict(dict(
      base_lr=1e-2, min_lr=1e-5, warmup_steps=20, warmup_epochs=0, b1=0.9, b2=0.95,
      weight_decay=0.05, grad_clip=1.0))

  config.log_every = 10
  config.image_every = 100
  config.checkpoint_every = 100
  config.keep_checkpoints = 2
  return config
