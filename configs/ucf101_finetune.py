r"""Finetuning on UCF101 (MGM Table 6, UCF101 column).

Split: split 1 (`--config.data.fold=2|3` for the others).

ViT-B from a pretraining run, 16 frames at stride 4, 224x224, base lr 5e-4 at VideoMAE's
128 videos per step, layer decay 0.75 (Table 6; VideoMAE's own UCF101 script uses 0.7), drop
path 0.2, no warmup, 100 epochs, repeated augmentation 2, flip, RandAugment m7 n4, random
erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1; test: 5 temporal x 3 spatial views on the test split (mgm_jax/schema.py
`finetune_defaults`). The paper's Table 2 transfers a K400 or SSv2 pretraining here.

    python launch/main.py --config=configs/ucf101_finetune.py --workdir=/runs/ucf101_ft \
        --config.init=/runs/k400_pretrain \
        --config.data.source=prepared --config.data.prepared_dir=/data/ucf101_prepared

`batch_size` counts clips: 256 = 128 videos x 2 repeated augmentations, so base_lr is half the
paper's 5e-4 to give VideoMAE's lr (see `schema.finetune_defaults`). The argument picks the
epochs: `--config=configs/ucf101_finetune.py:50`.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.finetune_defaults(num_classes=101)
  config.epochs = int(arg) if arg else 100
  config.batch_size = 256  # clips: 128 videos x data.repeats
  config.data.update(dataset="ucf101", split="train", num_train_videos=0, sampling="window",
                     stride=4, flip=True, repeats=2)
  config.optim.update(base_lr=2.5e-4, layer_decay=0.75, warmup_epochs=0.0)
  config.model.drop_path_rate = 0.2
  config.eval.update(split="test", temporal_views=5, spatial_views=3)
  return config
