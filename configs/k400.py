r"""MGM pretraining on Kinetics-400: the paper's recipe (Appendix A, Table 5).

As configs/ssv2.py (the schema's defaults, mgm_jax/schema.py) but 16 frames at stride 4 and
horizontal flip on (K400 labels do not depend on left/right).

    python launch/prepare_data.py --dataset=k400 --src=/data/k400 --out=/data/k400_prepared
    python launch/main.py --config=configs/k400.py --workdir=/tmp/mgm_k400 \
        --config.data.source=prepared --config.data.prepared_dir=/data/k400_prepared

  or with a VideoMAE list file:

    python launch/main.py --config=configs/k400.py --workdir=/tmp/mgm_k400 \
        --config.data.list_file=/data/k400/train.txt --config.data.root=/data/k400/videos

The argument picks the pretraining length in epochs: `--config=configs/k400.py:400`
(the paper reports 400, 800, 1200 and 1600; 800 by default). With fewer accelerators, keep the
global batch and raise `accum_steps` (8 GPUs: `--config.accum_steps=8`).
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.defaults()
  config.epochs = int(arg) if arg else 800
  config.data.update(dataset="k400",
                     num_train_videos=240_000,  # K400 train, about: set your download's count
                     stride=4, flip=True)
  return config
