"""Mixup / CutMix on a batch of clips and the soft-target loss, on device (pure JAX, jit-able).

The finetuning regulariser of VideoMAE (`run_class_finetuning.py`: mixup 0.8, cutmix 1.0,
switch 0.5, prob 1.0, smoothing 0.1, mode "batch"), as timm's `Mixup(mode='batch',
correct_lam=True)` defines it (`timm/data/mixup.py`), for channels-last video:

  mix(frames, labels, key, *, num_classes, ...) -> (frames, targets, info)
    frames  float [B, T, H, W, C] (already normalised; the result keeps the dtype)
    labels  int [B]
    targets float32 [B, num_classes], each row sums to 1
    info    {"lam": float32 scalar (the label weight used), "cutmix": bool scalar}

- With probability `prob` the batch is mixed, else frames are returned unchanged and lam = 1.
  Mixed means: ONE lam for the whole batch, Beta(a, a) of cutmix (with probability
  `switch_prob` when both alphas > 0) or mixup, and every clip mixed with the batch flipped
  along axis 0 (clip i with clip B-1-i).
- Mixup: lam * x + (1 - lam) * x[::-1].
- CutMix: one box for the whole batch and all T frames (the same pixels in every frame, so the
  pasted region is a tube), drawn like timm's `rand_bbox`: centre (cy, cx) uniform integers in
  [0, H) x [0, W), half sides int(H * sqrt(1 - lam)) // 2 and int(W * sqrt(1 - lam)) // 2,
  clipped to the frame; the box's pixels come from x[::-1]; lam becomes 1 - box_area / (H * W).
- targets = lam * y + (1 - lam) * y[::-1], y the smoothed one-hot of timm's `mixup_target`:
  off = smoothing / num_classes, on = 1 - smoothing + off.
- Both alphas <= 0 (or prob <= 0) turn mixing off: smoothed one-hot targets, frames unchanged
  (timm asserts instead; VideoMAE then builds no Mixup and uses LabelSmoothingCrossEntropy,
  which equals `soft_cross_entropy` of these targets).
- Randomness is a pure function of `key`. The hyper-parameters are Python numbers (static under
  jit); frames, labels and key may be traced.
- timm's `Mixup.__call__` asserts an even batch (all modes). Batch mode does not need it and
  neither does this: with odd B the middle clip is mixed with itself (frames and target kept).

Differences from VideoMAE's copy of timm (`mixup.py` there): its batch mode indexes a
[B, C, T, H, W] tensor as `x[:, :, yl:yh, xl:xh]`, so the box lands on (T, H) instead of (H, W)
while lam is corrected for an (H, W) box; here the box is spatial, in every frame, as intended.

  soft_cross_entropy(logits, targets) -> float32 scalar: mean over the batch of
    -sum(targets * log_softmax(logits)) (timm `SoftTargetCrossEntropy`), computed in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_one_hot(labels, num_classes: int, smoothing: float = 0.0):
  """float32 [B, num_classes]: on = 1 - smoothing + off, off = smoothing / num_classes."""
  off = smoothing / num_classes
  on = 1.0 - smoothing + off
  return jnp.where(jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_), on, off).astype(
      jnp.float32)


def _box(key, lam, height: int, width: int):
  """timm `rand_bbox` (no margin): (yl, yh, xl, xh) int32 scalars."""
  ky, kx = jax.random.split(key)
  ratio = jnp.sqrt(jnp.maximum(1.0 - lam, 0.0))
  half_h = jnp.floor(height * ratio).astype(jnp.int32) // 2
  half_w = jnp.floor(width * ratio).astype(jnp.int32) // 2
  cy = jax.random.randint(ky, (), 0, height)
  cx = jax.random.randint(kx, (), 0, width)
  return (jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height),
          jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width))


def mix(frames, labels, key, *, num_classes: int, mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0, switch_prob: float = 0.5, prob: float = 1.0,
        label_smoothing: float = 0.1):
  """Mixup / CutMix of a batch of clips; see the module docstring for the contract."""
  if frames.ndim != 5:
    raise ValueError(f'frames must be [B, T, H, W, C], got shape {frames.shape}')
  _, _, height, width, _ = frames.shape
  y = smooth_one_hot(labels, num_classes, label_smoothing)
  use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
  if not (use_mixup or use_cutmix) or prob <= 0:
    info = {'lam': jnp.ones((), jnp.float32), 'cutmix': jnp.zeros((), jnp.bool_)}
    return frames, y, info

  k_apply, k_switch, k_mixup, k_cutmix, k_box = jax.random.split(key, 5)
  apply = jax.random.uniform(k_apply) < prob
  if use_mixup and use_cutmix:
    cut = jax.random.uniform(k_switch) < switch_prob
  else:
    cut = jnp.asarray(use_cutmix)
  cut = cut & apply
  lam_mixup = jax.random.beta(k_mixup, mixup_alpha, mixup_alpha) if use_mixup else 1.0
  lam_cutmix = jax.random.beta(k_cutmix, cutmix_alpha, cutmix_alpha) if use_cutmix else 1.0
  lam = jnp.where(apply, jnp.where(cut, lam_cutmix, lam_mixup), 1.0).astype(jnp.float32)

  # CutMix box (empty unless cutmix is used) and the corrected lam.
  yl, yh, xl, xh = _box(k_box, jnp.where(cut, lam, 1.0), height, width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = (rows >= yl) & (rows < yh) & (cols >= xl) & (cols < xh)  # [H, W]
  area = (yh - yl) * (xh - xl)
  lam = jnp.where(cut, 1.0 - area.astype(jnp.float32) / (height * width), lam)

  flipped = frames[::-1]
  blended = frames * lam.astype(frames.dtype) + flipped * (1 - lam).astype(frames.dtype)
  pasted = jnp.where(inside[None, None, :, :, None], flipped, frames)
  mixed = jnp.where(apply, jnp.where(cut, pasted, blended), frames)
  targets = lam * y + (1.0 - lam) * y[::-1]
  return mixed, targets, {'lam': lam, 'cutmix': cut}


def soft_cross_entropy(logits, targets):
  """Mean over the batch of -sum(targets * log_softmax(logits, -1)), float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.mean(-jnp.sum(targets.astype(jnp.float32) * logp, axis=-1))
