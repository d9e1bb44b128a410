r"""MGM pretraining on UCF101 alone: the small-data setting (9.5K training videos, split 1).

The MGM paper pretrains only on K400 / SSv2 and transfers to UCF101 (Sec. 4, Table 2); this
config pretrains on UCF101 itself with VideoMAE's small-data recipe (MCG-NJU/VideoMAE
scripts/ucf101/..._tubemasking_ratio_0.75_epoch_3200/pretrain.sh: ViT-B, 16 frames at stride 4,
base lr 3e-4 x global batch / 256, batch 192 = 8 GPUs x 24, 40 warmup epochs, 3200 epochs,
AdamW (0.9, 0.95), mask ratio 0.75) with the mask swapped for MGM's motion-guided mask at
MGM's ratio 0.75. Flip on (UCF101 labels do not depend on left/right). Every other field is the
schema's default (mgm_jax/schema.py).

    python launch/prepare_data.py --dataset=ucf101 --src=/data/ucf101 --out=/data/ucf101_prepared
    python launch/main.py --config=configs/ucf101.py --workdir=/tmp/mgm_ucf101 \
        --config.data.prepared_dir=/data/ucf101_prepared

`--src` holds `UCF-101/` and `ucfTrainTestlist/` as downloaded; `--config=configs/ucf101.py:800`
sets the epochs; `--config.data.fold=2` (with a matching preparation) another official split.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.defaults()
  config.epochs = int(arg) if arg else 3200
  config.batch_size = 192
  config.optim.base_lr = 3e-4
  config.checkpoint_every = 2000
  config.data.update(source="prepared", dataset="ucf101", num_train_videos=9537, stride=4,
                     flip=True)
  return config
