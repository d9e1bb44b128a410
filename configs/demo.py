r"""The CPU demo: a tiny ViT MAE pretrained with motion-guided masks on generated H.264 videos.

Creates its own data (synthetic textured objects moving on textured backgrounds, real H.264 files
with motion vectors) under the workdir, then trains a few hundred steps on CPU:

    python launch/main.py --config=configs/demo.py --workdir=/tmp/mgm_demo

`--config=configs/demo.py:STEPS` sets the number of steps (300 by default). The numbers say
nothing about the paper's accuracy claims: this checks that the whole system runs and learns.
Every field not set here is the schema's default (mgm_jax/schema.py).

The demo predicts raw pixels (`loss.norm_pix=False`) at a high learning rate. With VideoMAE's
per-patch normalised target (the paper's, used by ssv2.py / k400.py) the synthetic textures' fine
noise is unpredictable after normalisation: the loss only drops from ~1.08 to ~1.00 in 100-300
CPU steps, which shows little. `--config.loss.norm_pix=True` runs it that way.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.defaults()
  config.total_steps = int(arg) if arg else 300
  config.batch_size = 16
  config.model.update(size="tiny", num_frames=8, img_size=96, dtype="float32")
  config.loss.norm_pix = False
  config.data.update(
      source="synthetic", num_train_videos=0, num_synthetic_videos=96,
      synthetic=dict(height=128, width=160, num_frames=32),
      stride=2, flip=True, repeats=2, num_threads=2)
  config.optim.update(base_lr=1e-2, warmup_steps=20)
  config.log_every = 10
  config.image_every = 100
  config.checkpoint_every = 100
  config.keep_checkpoints = 2
  return config
