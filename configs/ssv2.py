r"""MGM pretraining on Something-Something v2: the paper's recipe (Appendix A, Table 5).

ViT-B, 16 frames at stride 2, 224x224, motion-guided masks at ratio 0.75, AdamW (0.9, 0.95),
base lr 1.5e-4 x global batch / 256, weight decay 0.05, batch 512, 40 warmup epochs, cosine
decay, no flip (SSv2 labels depend on left/right), multi-scale crop. These are the schema's
defaults (mgm_jax/schema.py, every field explained there); this file names the data set.

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

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.defaults()
  config.epochs = int(arg) if arg else 800
  config.data.update(dataset="ssv2", num_train_videos=168_913, stride=2,
                     flip=False)  # SSv2 ships VP9: prepare it to H.264 for motion vectors
  return config
