r"""Finetuning on Kinetics-400 (MGM Table 6, K400 column; VideoMAE's K400 recipe).

ViT-B from a pretraining run, 16 frames at stride 4, 224x224, base lr 1e-3 x batch / 256
(batch 128), layer decay 0.75, drop path 0.1, 5 warmup epochs, 75 epochs, no repeated
augmentation, flip, RandAugment m7 n4, random erasing 0.25, mixup 0.8 / cutmix 1.0, label
smoothing 0.1; test: 5 temporal x 3 spatial views (mgm_jax/schema.py `finetune_defaults`).

    python launch/main.py --config=configs/k400_finetune.py --workdir=/runs/k400_ft \
        --config.init=/runs/k400_pretrain \
        --config.data.source=prepared --config.data.prepared_dir=/data/k400_prepared

The argument picks the epochs: `--config=configs/k400_finetune.py:100`.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.finetune_defaults(num_classes=400)
  config.epochs = int(arg) if arg else 75
  config.batch_size = 128
  config.data.update(dataset="k400", split="train", num_train_videos=0, sampling="window",
                     stride=4, flip=True, repeats=1)
  config.optim.update(base_lr=1e-3, layer_decay=0.75, warmup_epochs=5.0)
  config.model.drop_path_rate = 0.1
  config.eval.update(split="validation", temporal_views=5, spatial_views=3)
  return config
