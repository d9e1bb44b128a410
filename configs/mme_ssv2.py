r"""MME (Masked Motion Encoding) on Something-Something v2, with trajectories from codec vectors.

MME (Sun et al. 2022; XinyuSun/MME) reconstructs, for the masked tokens, the motion trajectories
of points tracked through dense optical flow and the appearance as HOG. Its released code's
settings, kept here: tube masks at ratio 0.7; one decoder of depth 1 and width 192 with one
head per target; 2 x 2 points per 16 px patch (the 8 px cell centres) tracked 4 frame steps
from each tubelet's first frame; the trajectory normalised per patch ('PatchStd': each point's
motion relative to the patch, over its std); HOG and trajectory weighted equally; AdamW and
lr as VideoMAE; SSv2 pretrained 400 epochs (its ssv2pt-400epo finetune script).
What differs:
- Motion comes from the codec's motion vectors of every decoded frame, not from offline
  Farneback flow with iDT camera compensation; clips without vectors are left out of the
  trajectory term (their share in the `trajectory_clips` metric). The vectors must come from a
  one-reference-frame H.264 encode (launch/prepare_data.py's): FFmpeg does not say how far
  back a reference lies, and x264's default ref=3 puts trajectories 3-4 px per step off.
- Heads are single Linear layers (MME: Linear-GELU-Linear with tanh / sigmoid), the loss a
  mean over values (MME: sum over a token's values), so the two terms weigh differently.
- HOG (mgm_jax/hog.py) is of every frame of the tubelet, hard-binned as scikit-image,
  L2-normalised per patch; MME's is of the tubelet's second frame, soft-binned, not normalised.
- Stride 2 (VideoMAE's SSv2); MME's K400 script samples every 4th frame, where its 4 steps are
  the tubelet's span; at stride 2 they reach the next tubelet's first frame.

    python launch/main.py --config=configs/mme_ssv2.py --workdir=DIR \
        --config.data.source=prepared --config.data.prepared_dir=/data/ssv2_prepared
    python launch/main.py --config=configs/mme_ssv2.py:demo --workdir=/tmp/mme

`:N` sets the epochs; `:demo` the CPU demo's scale.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.defaults()
  config.epochs = 400
  config.mask.update(strategy="tube", ratio=0.7)
  config.loss.update(pixels=0.0, hog=0.5, trajectory=0.5, trajectory_points=2,
                     trajectory_steps=4, trajectory_patch_norm=True)
  config.data.update(dataset="ssv2", num_train_videos=168_913, stride=2, flip=False,
                     motion="mv")  # trajectories need vectors: prepare SSv2 to H.264
  if arg == "demo":
    return schema.demo_scale(config)
  config.model.update(decoder_depth=1, decoder_dim=192, decoder_heads=6)
  if arg:
    config.epochs = int(arg)
  return config
