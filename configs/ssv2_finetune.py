r"""Finetuning on Something-Something v2 (MGM Table 6, SSv2 column; VideoMAE's SSv2 recipe).

ViT-B from a pretraining run, 16 TSN segments, 224x224, base lr 5e-4 at VideoMAE's 128 videos per
step, layer decay 0.75, drop path 0.1, 5 warmup epochs, 30 epochs, repeated augmentation 2, no
flip (SSv2 labels depend on left/right), RandAugment m7 n4, random erasing 0.25, mixup 0.8 /
cutmix 1.0, label smoothing 0.1; test: 2 temporal x 3 spatial views (mgm_jax/schema.py
`finetune_defaults` holds the shared part, every field explained there).

    python launch/main.py --config=configs/ssv2_finetune.py --workdir=/runs/ssv2_ft \
        --config.init=/runs/ssv2_pretrain \
        --config.data.source=prepared --config.data.prepared_dir=/data/ssv2_prepared

`--config.init` takes a mgm-jax workdir, a Hugging Face VideoMAE folder or an official
VideoMAE .pth. `batch_size` counts clips: 256 = 128 videos x 2 repeated augmentations, so
base_lr is half the paper's 5e-4 to give VideoMAE's lr (it scales by videos, we by clips; see
`schema.finetune_defaults`). With fewer accelerators keep the batch and raise accum_steps.
The argument picks the epochs: `--config=configs/ssv2_finetune.py:40`.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.finetune_defaults(num_classes=174)
  config.epochs = int(arg) if arg else 30
  config.batch_size = 256  # clips: 128 videos x data.repeats
  config.data.update(dataset="ssv2", split="train", num_train_videos=0, sampling="segments",
                     stride=2, flip=False, repeats=2)
  config.optim.update(base_lr=2.5e-4, layer_decay=0.75, warmup_epochs=5.0)
  config.model.drop_path_rate = 0.1
  config.eval.update(split="validation", temporal_views=2, spatial_views=3)
  return config
