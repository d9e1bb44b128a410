r"""MAM2 ("It Takes Two") on Something-Something v2: encoder -> regressor -> two decoders.

MAM2 (Song et al. 2022) separates the encoder from the pretext tasks with a regressor and
predicts appearance and motion with two decoders; RGB difference was its best motion target, and
it needs half of VideoMAE's epochs (400 here). Its code is not public; what its abstract does not
give is ours:
- The regressor: 4 cross-attention blocks (CAE's number) in which learned mask queries (plus
  the position table) attend to the visible tokens' encoder features, which it never updates.
  Both decoders then read [visible features, regressed masked features]
  (mgm_jax/model.py `Regressor`, `MaskedAutoencoder.predict`).
- Appearance target: MAM2 predicts VQGAN tokens, which needs a pretrained tokenizer we cannot
  ship; the appearance decoder predicts VideoMAE's normalised pixels instead.
- Motion target: the dense frame difference of each tubelet's span (mgm_jax/targets.py), on the
  motion decoder; both terms weighted 1; tube masks at ratio 0.9 (VideoMAE's).

    python launch/main.py --config=configs/mam2_ssv2.py --workdir=DIR \
        --config.data.source=prepared --config.data.prepared_dir=/data/ssv2_prepared
    python launch/main.py --config=configs/mam2_ssv2.py:demo --workdir=/tmp/mam2

`:N` sets the epochs; `:demo` the CPU demo's scale.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.defaults()
  config.epochs = 400
  config.data.update(dataset="ssv2", num_train_videos=168_913, stride=2, flip=False)
  config.mask.update(strategy="tube", ratio=0.9)
  config.model.update(regressor_depth=4, motion_decoder=True)
  config.loss.update(pixels=1.0, frame_diff=1.0, frame_diff_dense=True)
  if arg == "demo":
    config = schema.demo_scale(config)
    config.model.regressor_depth = 2  # the tiny encoder has 4 blocks
    return config
  if arg:
    config.epochs = int(arg)
  return config
