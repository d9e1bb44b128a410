"""The reconstruction targets beyond pixels, and a config's list of targets and model heads.

One loss path: every term is a `loss.Target` scored by `loss.masked_losses` on the masked
tokens. The terms, each on when its weight in `config.loss` is > 0:

* `pixels`: VideoMAE's (normalised) pixels (`loss.PixelTarget`).
* `frame_diff` (MotionMAE, MAM2's best motion target): signed RGB differences of adjacent frames
  inside each tubelet's span, per patch. With `loss.frame_diff_dense` and stride s > 1 the span
  is every decoded frame from the tubelet's first sampled frame a to its last, a + (tubelet-1)s:
  the (tubelet - 1) * s differences f(a+1) - f(a), ..., f(a+(tubelet-1)s) - f(a+(tubelet-1)s-1),
  which needs the frames between sampled ones (batch "between", decoded only then). Without it,
  the tubelet - 1 differences of its sampled frames f(a+s) - f(a), ... Their sum telescopes: the
  dense differences of a span add up to the sampled one, so the dense target adds only how the
  change is spread over the frames in between. Values in [-1, 1], normalised per patch and
  channel like the pixel target when `loss.frame_diff_norm`.
* `trajectory` (MME): the codec trajectories of `input_pipeline/trajectories.py` (batch
  "trajectory"), divided by `loss.trajectory_scale` px/frame. Clips whose motion came from
  frame differences (no vectors) have "trajectory_valid" 0 and are left out of this term.
* `hog` (MaskFeat; MME's appearance option): per-patch HOG of every frame (`hog.py`).

Where the predictions come from (`model_config`): `pixels` is the decoder's own head; every
other term is an extra head of the decoder (MotionMAE's layout), or with `model.motion_decoder`
the motion terms (frame_diff, trajectory) go to MAM2's second decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses

import einops
import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import trajectories as trajectories_lib
from mgm_jax import hog as hog_lib
from mgm_jax import loss as loss_lib
from mgm_jax import model as model_lib

Array = jax.Array

MOTION_TERMS = ("frame_diff", "trajectory")
TERMS = ("pixels", "frame_diff", "trajectory", "hog")


def span_order(tubelet: int, stride: int) -> np.ndarray:
  """Static gather order: position j of a tubelet's span -> its index in the concatenation
  [the tubelet's sampled frames (tubelet), its "between" frames ((tubelet - 1) * (stride - 1))]."""
  order = []
  for j in range((tubelet - 1) * stride + 1):
    i, r = divmod(j, stride)
    order.append(i if r == 0 else tubelet + i * (stride - 1) + r - 1)
  return np.asarray(order, np.int32)


@dataclasses.dataclass(frozen=True)
class FrameDiffTarget:
  """Signed adjacent-frame differences per tubelet span (module docstring)."""

  name: str = "frame_diff"
  weight: float = 1.0
  tubelet: int = 2
  patch: int = 16
  stride: int = 1  # > 1 with dense: reads batch["between"]
  dense: bool = True
  norm: bool = True
  valid_key: str | None = None

  @property
  def reads_between(self) -> bool:
    return self.dense and self.stride > 1

  @property
  def steps(self) -> int:
    """Differences per tubelet."""
    return (self.tubelet - 1) * (self.stride if self.reads_between else 1)

  def dim(self, channels: int = 3) -> int:
    return self.steps * self.patch * self.patch * channels

  def __call__(self, batch: Mapping[str, Array]) -> Array:
    video = jnp.asarray(batch["video01"], jnp.float32)  # [B, T, H, W, C]
    b, t, h, w, c = video.shape
    slots = video.reshape(b, t // self.tubelet, self.tubelet, h, w, c)
    if self.reads_between:
      between = jnp.asarray(batch["between"], jnp.float32) / 255.0  # [B, t, K, H, W, C]
      span = jnp.take(jnp.concatenate([slots, between], axis=2),
                      span_order(self.tubelet, self.stride), axis=2)
    else:
      span = slots
    diff = span[:, :, 1:] - span[:, :, :-1]  # [B, t, steps, H, W, C]
    x = einops.rearrange(diff, "b t l (h p1) (w p2) c -> b (t h w) (l p1 p2 c)",
                         p1=self.patch, p2=self.patch)
    if self.norm:
      x = loss_lib.normalise_patches(x, c)
    return jax.lax.stop_gradient(x)


@dataclasses.dataclass(frozen=True)
class TrajectoryTarget:
  """MME's motion trajectories from codec vectors, computed on the host (module docstring).

  batch["trajectory"] [B, N, steps * (1 + P) * 2] holds per step the patch's mean (dx, dy) and
  each of its P = points**2 points' deviation from it (`trajectories.token_trajectories`).
  Without `patch_norm` the target is that, divided by `scale`; with it, MME's code's
  'PatchStd': the deviations only, per (step, coordinate) divided by their unbiased std over
  the points + 1e-6 (the patch's own translation is removed), [B, N, steps * P * 2].
  """

  name: str = "trajectory"
  weight: float = 1.0
  steps: int = 2
  points: int = 2
  scale: float = 1.0  # px/frame that become 1.0
  patch_norm: bool = False
  valid_key: str | None = "trajectory_valid"

  def dim(self, channels: int = 3) -> int:
    del channels
    if self.patch_norm:  # the points' deviations only
      return self.steps * self.points ** 2 * 2
    return trajectories_lib.values_per_token(self.steps, self.points)

  def __call__(self, batch: Mapping[str, Array]) -> Array:
    x = jnp.asarray(batch["trajectory"], jnp.float32)
    if not self.patch_norm:
      return jax.lax.stop_gradient(x / self.scale)
    b, n, _ = x.shape
    dev = x.reshape(b, n, self.steps, 1 + self.points ** 2, 2)[:, :, :, 1:]
    std = jnp.sqrt(jnp.var(dev, axis=3, ddof=1, keepdims=True))
    return jax.lax.stop_gradient((dev / (std + 1e-6)).reshape(b, n, -1))


@dataclasses.dataclass(frozen=True)
class HogTarget:
  """Per-patch HOG of every frame, per RGB channel (`hog.hog_target`)."""

  name: str = "hog"
  weight: float = 1.0
  tubelet: int = 2
  patch: int = 16
  cell: int = 8
  bins: int = 9
  valid_key: str | None = None

  def dim(self, channels: int = 3) -> int:
    return self.tubelet * (self.patch // self.cell) ** 2 * self.bins * channels

  def __call__(self, batch: Mapping[str, Array]) -> Array:
    return hog_lib.hog_target(batch["video01"], self.tubelet, self.patch, self.cell, self.bins)


def from_config(config) -> list:
  """The terms a pretraining config asks for (weight > 0), in TERMS order."""
  m, lc = model_lib.model_config_from(config.model), config.loss  # the preset fills the gaps
  out = []
  if lc.pixels > 0:
    out.append(loss_lib.PixelTarget(weight=lc.pixels, tubelet=m.tubelet, patch=m.patch,
                                    norm_pix=lc.norm_pix))
  if lc.frame_diff > 0:
    out.append(FrameDiffTarget(weight=lc.frame_diff, tubelet=m.tubelet, patch=m.patch,
                               stride=config.data.stride, dense=lc.frame_diff_dense,
                               norm=lc.frame_diff_norm))
  if lc.trajectory > 0:
    steps = lc.trajectory_steps or trajectories_lib.default_steps(m.tubelet, config.data.stride)
    out.append(TrajectoryTarget(weight=lc.trajectory, steps=steps,
                                points=lc.trajectory_points, scale=lc.trajectory_scale,
                                patch_norm=lc.trajectory_patch_norm))
  if lc.hog > 0:
    out.append(HogTarget(weight=lc.hog, tubelet=m.tubelet, patch=m.patch))
  return out


def batch_keys(targets) -> tuple[str, ...]:
  """Batch entries the targets read besides "frames" and "mask"."""
  keys = []
  for t in targets:
    if isinstance(t, FrameDiffTarget) and t.reads_between:
      keys.append("between")
    if isinstance(t, TrajectoryTarget):
      keys += ["trajectory", "trajectory_valid"]
  return tuple(keys)


def model_config(config, **overrides) -> model_lib.ModelConfig:
  """The ModelConfig of a config: `model.*` plus one head per non-pixel target (module
  docstring). Classifiers (num_classes > 0) have no heads."""
  fields = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
  motion_decoder = bool(fields.get("motion_decoder", False))
  if fields.get("num_classes", 0) > 0:
    return model_lib.model_config_from(fields, **overrides)
  extra, motion = [], []
  for t in from_config(config):
    if t.name == "pixels":
      continue
    head = (t.name, t.dim())
    (motion if motion_decoder and t.name in MOTION_TERMS else extra).append(head)
  return model_lib.model_config_from(fields, extra_heads=tuple(extra),
                                     motion_heads=tuple(motion), **overrides)
