r"""MotionMAE on Something-Something v2: pixels plus the frame difference, one decoder.

MotionMAE (Yang et al. 2022) reconstructs the masked patches and "the temporal difference of
nearby frames". Its code is not public and its abstract gives no settings, so this file takes
VideoMAE's (the model it extends): ViT-B, 16 frames at stride 2, tube masks at ratio 0.9, 800
epochs, and one decoder with two heads (pixels and frame differences), both terms weighted 1.
Ours: the frame difference is every adjacent pair of decoded frames inside each tubelet's span
(stride 2: f(a+1) - f(a) and f(a+2) - f(a+1)), per patch, normalised like the pixels
(mgm_jax/targets.py says exactly which frames).

    python launch/main.py --config=configs/motionmae_ssv2.py --workdir=DIR \
        --config.data.source=prepared --config.data.prepared_dir=/data/ssv2_prepared
    python launch/main.py --config=configs/motionmae_ssv2.py:demo --workdir=/tmp/motionmae

`:N` sets the epochs; `:demo` the CPU demo's scale (schema.demo_scale: tiny model, generated
videos, 800 steps).
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.defaults()
  config.epochs = 800
  config.data.update(dataset="ssv2", num_train_videos=168_913, stride=2, flip=False)
  config.mask.update(strategy="tube", ratio=0.9)
  config.loss.update(pixels=1.0, frame_diff=1.0, frame_diff_dense=True)
  if arg == "demo":
    return schema.demo_scale(config)
  if arg:
    config.epochs = int(arg)
  return config
