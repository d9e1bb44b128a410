r"""MGM pretraining on Something-Something v2: the paper's recipe (Appendix A, Table 5).

ViT-B, 16 frames at stride 2, 224x224, motion-guided masks at ratio 0.75, AdamW (0.9, 0.95),
base lr 1.5e-4 x global batch / 256, weight decay 0.05, batch 512, 40 warmup epochs, cosine
decay, no flip (SSv2 labels depend on left/right), multi-scale crop.

    python launch/prepare_data.py --dataset=ssv2 --src=/data/ssv2 --out=/data/ssv2_prepared
    python launch/main.py --config=configs/ssv2.py --workdir=/tmp/mgm_ssv2 \
        --config.data.source=prepared --config.data.prepared_dir=/data/ssv2_prepared

  or with a VideoMAE list file:

    python launch/main.py --config=configs/ssv2.py --workdir=/tmp/mgm_ssv2 \
        --config.data.list_file=/data/ssv2/train.txt --config.data.root=/data/ssv2/videos

The argument picks the pretraining length in epochs: `--config=configs/ssv2.py:400`
(the paper reports 400, 800, 1200, 1600 and 2400; 800 by default). Any field can be overridden,
e.g. `--config.mask.strategy=tube --config.mask.ratio=0.9 --config.model.size=S`.
With fewer accelerators, keep the global batch and raise `accum_steps`
(e.g. 8 GPUs: `--config.accum_steps=8` gives 512 as 8 micro-batches of 64).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.epochs = int(arg) if arg else 800
  config.total_steps = -1  # > 0 overrides epochs x steps_per_epoch
  config.batch_size = 512  # global, all processes and micro-batches together
  config.accum_steps = 1  # gradient accumulation: micro-batches of batch_size / accum_steps

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1: all remaining devices

  config.model = ml_collections.ConfigDict(dict(
      size="B", num_frames=16, img_size=224, tubelet=2, patch=16, drop_path_rate=0.0,
      dtype="bfloat16", remat=False))
  config.mask = ml_collections.ConfigDict(dict(strategy="mgm", ratio=0.75, jitter=1.0))
  config.loss = ml_collections.ConfigDict(dict(norm_pix=True))

  config.data = ml_collections.ConfigDict(dict(
      # prepared: ArrayRecord shards from launch/prepare_data.py (prepared_dir); raw: the data
      # set's own annotations under root, decoded on the fly; list: a VideoMAE list file;
      # synthetic: generated videos.
      source="list",
      list_file="", root="",  # root: directory the list's relative paths start from
      prepared_dir="", dataset="ssv2", split="train", fold=1,
      num_train_videos=168913,  # SSv2 train split; sets the epoch length
      num_synthetic_videos=0,
      stride=2, scales=(1.0, 0.875, 0.75, 0.66), flip=False,
      motion="auto",  # mv | frame_diff | auto (SSv2 ships VP9: transcode to H.264 for vectors)
      compensate_camera=False,
      repeats=1,  # repeated sampling: crops/masks per decoded video
      num_threads=16, num_workers=0, prefetch=2,
      max_skipped_fraction=0.01,  # error budget: stop if more broken videos than this
  ))
  config.optim = ml_collections.ConfigDict(dict(
      base_lr=1.5e-4, min_lr=1e-5, warmup_epochs=40, warmup_steps=-1,  # steps >= 0 win
      b1=0.9, b2=0.95, weight_decay=0.05,
      grad_clip=0.0))  # 0: no clipping (VideoMAE's pretraining default)

  config.log_every = 50
  config.image_every = 5000
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  return config
