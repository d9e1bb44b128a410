r"""MGM pretraining on UCF101 alone: the small-data setting (9.5K training videos, split 1).

The MGM paper pretrains only on K400 / SSv2 and transfers to UCF101 (Sec. 4, Table 2); this
config pretrains on UCF101 itself with VideoMAE's small-data recipe (MCG-NJU/VideoMAE
scripts/ucf101/..._tubemasking_ratio_0.75_epoch_3200/pretrain.sh: ViT-B, 16 frames at stride 4,
base lr 3e-4 x global batch / 256, batch 192 = 8 GPUs x 24, 40 warmup epochs, 3200 epochs,
AdamW (0.9, 0.95), mask ratio 0.75) with the mask swapped for MGM's motion-guided mask at
MGM's ratio 0.75 (paper Appendix A; VideoMAE also uses 0.75 on UCF101, 0.9 on K400 / SSv2).
Flip on (UCF101 labels do not depend on left/right).

    python launch/prepare_data.py --dataset=ucf101 --src=/data/ucf101 --out=/data/ucf101_prepared
    python launch/main.py --config=configs/ucf101.py --workdir=/tmp/mgm_ucf101 \
        --config.data.prepared_dir=/data/ucf101_prepared

`--src` holds `UCF-101/` and `ucfTrainTestlist/` as downloaded; `--config=configs/ucf101.py:800`
sets the epochs; `--config.data.fold=2` (with a matching preparation) another official split.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.epochs = int(arg) if arg else 3200
  config.total_steps = -1  # > 0 overrides epochs x steps_per_epoch
  config.batch_size = 192  # global, all processes and micro-batches together
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
      source="prepared",
      list_file="", root="",  # root: directory the list's relative paths start from
      prepared_dir="", dataset="ucf101", split="train", fold=1,
      num_train_videos=9537,  # UCF101 train split 1
      num_synthetic_videos=0,
      stride=4, scales=(1.0, 0.875, 0.75, 0.66), flip=True,
      motion="auto",  # mv | frame_diff | auto (mixed codecs: auto falls back per video)
      compensate_camera=False,
      repeats=1,  # repeated sampling: crops/masks per decoded video
      num_threads=16, num_workers=0, prefetch=2,
      max_skipped_fraction=0.01,  # error budget: stop if more broken videos than this
  ))
  config.optim = ml_collections.ConfigDict(dict(
      base_lr=3e-4, min_lr=1e-5, warmup_epochs=40, warmup_steps=-1,  # steps >= 0 win
      b1=0.9, b2=0.95, weight_decay=0.05,
      grad_clip=0.0))  # 0: no clipping (VideoMAE's pretraining default)

  config.log_every = 50
  config.image_every = 5000
  config.checkpoint_every = 2000
  config.keep_checkpoints = 3
  return config
