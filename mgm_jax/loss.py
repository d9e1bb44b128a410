"""Reconstruction targets and masked losses (VideoMAE's normalised-pixel MSE).

A loss is a sum of named terms. Each `Target` turns the batch into per-token targets [B, N, D]
and names the model output (`preds[name]`, [B, num_masked, D]) it supervises; `masked_losses`
scores every target on the masked tokens. The pixel target is here; the motion-aware ones
(frame difference, trajectories, HOG) are in `targets.py`, which also maps a config to its
list of targets and to the model heads that predict them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Protocol

import einops
import jax
import jax.numpy as jnp

from mgm_jax.model import gather_tokens, split_token_indices

Array = jax.Array


def patchify(video01: Array, tubelet: int, patch: int) -> Array:
  """Cuts [B, T, H, W, C] into tubelet patches [B, N, tubelet * patch**2 * C].

  Tokens are in (t, h, w) order; values within a patch in (t, h, w, c) order, as VideoMAE's
  `b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c` followed by `(p c)`.
  """
  return einops.rearrange(video01, 'b (t p0) (h p1) (w p2) c -> b (t h w) (p0 p1 p2 c)',
                          p0=tubelet, p1=patch, p2=patch)


def reconstruction_target(video01: Array, tubelet: int, patch: int,
                          norm_pix: bool = True) -> Array:
  """VideoMAE's pixel target from the raw [0, 1] video, float32 [B, N, tubelet * patch**2 * C].

  With `norm_pix`, each patch is normalised per channel over its tubelet * patch**2 pixels:
  (x - mean) / (unbiased std + 1e-6). No gradient flows into the target.
  """
  video01 = jnp.asarray(video01, jnp.float32)
  x = patchify(video01, tubelet, patch)
  if norm_pix:
    x = normalise_patches(x, video01.shape[-1])
  return jax.lax.stop_gradient(x)


def normalise_patches(x: Array, channels: int) -> Array:
  """[B, N, D] with values in (..., channel) order -> per token and channel
  (x - mean) / (unbiased std + 1e-6), VideoMAE's pixel-target normalisation."""
  x = x.reshape(*x.shape[:2], -1, channels)
  mean = jnp.mean(x, axis=-2, keepdims=True)
  std = jnp.sqrt(jnp.var(x, axis=-2, ddof=1, keepdims=True))
  x = (x - mean) / (std + 1e-6)
  return x.reshape(x.shape[0], x.shape[1], -1)


def masked_mse(pred: Array, target: Array, mask: Array, num_masked: int,
               clip_weights: Array | None = None) -> Array:
  """Mean squared error over the masked tokens and all their values.

  Args:
    pred: [B, num_masked, D], masked tokens in increasing token order (the model's output).
    target: [B, N, D] for all tokens.
    mask: bool [B, N] or [B, t, h, w]; True = masked; exactly `num_masked` per row.
    num_masked: static number of masked tokens per row.
    clip_weights: float [B] >= 0 or None. With weights, the mean is over the clips weighted by
      them (a clip of weight 0 adds nothing, e.g. one without motion vectors for a trajectory
      target); 0 if every weight is 0.

  Returns:
    float32 scalar.
  """
  _, masked = split_token_indices(mask, num_masked)
  target = gather_tokens(target, masked)
  if pred.shape != target.shape:
    raise ValueError(f'pred shape {pred.shape} != masked target shape {target.shape}')
  error = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if clip_weights is None:
    return jnp.mean(error)
  w = jnp.asarray(clip_weights, jnp.float32)
  per_clip = jnp.mean(error.reshape(error.shape[0], -1), axis=1)
  return jnp.sum(w * per_clip) / jnp.maximum(jnp.sum(w), 1e-12)


class Target(Protocol):
  """A per-token reconstruction target supervising the model output `preds[name]`.

  Attributes:
    name: the term's name and the prediction it scores.
    weight: its weight in the total loss.
    valid_key: None, or the batch entry (float [B]) weighting each clip's term (0 = not scored).
  """

  name: str
  weight: float
  valid_key: str | None

  def __call__(self, batch: Mapping[str, Array]) -> Array:
    """Returns the target for every token, [B, N, D]."""
    ...


@dataclasses.dataclass(frozen=True)
class PixelTarget:
  """VideoMAE's (normalised) pixel target, read from `batch[video_key]` in [0, 1]."""

  name: str = 'pixels'
  weight: float = 1.0
  tubelet: int = 2
  patch: int = 16
  norm_pix: bool = True
  video_key: str = 'video01'
  valid_key: str | None = None

  def __call__(self, batch: Mapping[str, Array]) -> Array:
    return reconstruction_target(batch[self.video_key], self.tubelet, self.patch, self.norm_pix)


def masked_losses(preds: Mapping[str, Array], batch: Mapping[str, Array], mask: Array,
                  num_masked: int, targets: Sequence[Target]) -> tuple[Array, dict[str, Array]]:
  """Scores each target on the masked tokens.

  Args:
    preds: model outputs by target name, each [B, num_masked, D].
    batch: whatever the targets read (e.g. 'video01', and their `valid_key` entries).
    mask: bool [B, N] or [B, t, h, w]; True = masked.
    num_masked: static number of masked tokens per row.
    targets: the terms; their names must be unique and present in `preds`.

  Returns:
    (sum of weight * term, {name: term}) as float32 scalars.
  """
  names = [t.name for t in targets]
  if len(set(names)) != len(names):
    raise ValueError(f'target names must be unique, got {names}')
  missing = sorted(set(names) - set(preds))
  if missing:
    raise KeyError(f'no prediction for targets {missing}; have {sorted(preds)}')
  terms = {t.name: masked_mse(preds[t.name], t(batch), mask, num_masked,
                             None if t.valid_key is None else batch[t.valid_key])
           for t in targets}
  total = sum((t.weight * terms[t.name] for t in targets), jnp.zeros((), jnp.float32))
  return total, terms
