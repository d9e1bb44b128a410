"""Reconstruction images: original | masked input | reconstruction, for logs and notebooks.

    pred = reconstruct_batch(model, frames[None], mask[None], num_masked)[0]
    panel = reconstruction_panel(frames, mask, pred, tubelet=2, patch=16)  # uint8 [3h', w', 3]

With a normalised-pixel target (`norm_pix`), the model predicts each patch up to its per-channel
mean and scale; as in VideoMAE's visualisation, a predicted patch is shown un-normalised with the
TRUE patch's per-channel mean and unbiased std (+1e-6), so only the structure is the model's.
"""

from __future__ import annotations

import functools

import einops
from flax import nnx
import jax
import numpy as np

from mgm_jax import loss as loss_lib
from mgm_jax import model as model_lib

_GREY = 128
_SEP = 2  # Separator width in pixels between tiles.


def _patches(frames01: np.ndarray, tubelet: int, patch: int) -> np.ndarray:
  """[T, H, W, C] -> [N, tubelet * patch**2, C]: the loss's patch layout (NumPy in, NumPy out)."""
  flat = loss_lib.patchify(frames01[None], tubelet, patch)[0]
  return flat.reshape(flat.shape[0], -1, frames01.shape[-1])


def reconstruct_video(frames_uint8: np.ndarray, mask: np.ndarray, pred: np.ndarray, *,
                      tubelet: int, patch: int, norm_pix: bool = True) -> np.ndarray:
  """The full reconstructed clip, uint8 [T, H, W, 3]: visible patches as given, masked predicted.

  Args:
    frames_uint8: the clip, uint8 [T, H, W, 3].
    mask: bool [t, h, w] (or [N]); True = masked.
    pred: [num_masked, tubelet * patch**2 * 3], masked tokens in `x[mask]` order, values in
      (t, h, w, c) order: normalised patches if `norm_pix`, else pixels in [0, 1].
    tubelet, patch: the model's token size.
    norm_pix: whether `pred` is in the normalised-pixel space.
  """
  frames_uint8 = np.asarray(frames_uint8)
  t_len, height, width, chans = frames_uint8.shape
  grid = (t_len // tubelet, height // patch, width // patch)
  mask = np.asarray(mask, bool).reshape(-1)
  if mask.size != int(np.prod(grid)):
    raise ValueError(f'mask has {mask.size} tokens; frames {frames_uint8.shape} make {grid}')
  num_masked = int(mask.sum())
  pred = np.asarray(pred, np.float32).reshape(num_masked, -1, chans)
  patches = _patches(frames_uint8.astype(np.float32) / 255.0, tubelet, patch)
  if pred.shape[1] != patches.shape[1]:
    raise ValueError(f'pred patch size {pred.shape[1] * chans} != {patches.shape[1] * chans}')
  true = patches[mask]
  if norm_pix:
    mean = true.mean(axis=1, keepdims=True)
    std = true.std(axis=1, ddof=1, keepdims=True)
    pred = pred * (std + 1e-6) + mean
  out = patches.copy()
  out[mask] = np.clip(pred, 0.0, 1.0)
  video = einops.rearrange(out, '(t h w) (p0 p1 p2) c -> (t p0) (h p1) (w p2) c',
                           t=grid[0], h=grid[1], w=grid[2], p0=tubelet, p1=patch, p2=patch)
  return np.round(video * 255.0).astype(np.uint8)


def masked_video(frames_uint8: np.ndarray, mask: np.ndarray, *, tubelet: int,
                 patch: int) -> np.ndarray:
  """The encoder's view: masked tubelets painted grey, uint8 [T, H, W, 3]."""
  frames_uint8 = np.asarray(frames_uint8)
  t_len, height, width, _ = frames_uint8.shape
  grid = (t_len // tubelet, height // patch, width // patch)
  pixel_mask = np.asarray(mask, bool).reshape(grid)
  for axis, size in enumerate((tubelet, patch, patch)):
    pixel_mask = np.repeat(pixel_mask, size, axis=axis)
  return np.where(pixel_mask[..., None], np.uint8(_GREY), frames_uint8)


def _tile_row(frames: np.ndarray) -> np.ndarray:
  """[K, H, W, 3] -> [H, K * W + (K - 1) * sep, 3] with white separators."""
  k, height, _, chans = frames.shape
  sep = np.full((height, _SEP, chans), 255, np.uint8)
  parts = []
  for i in range(k):
    parts += [frames[i]] + ([sep] if i < k - 1 else [])
  return np.concatenate(parts, axis=1)


def reconstruction_panel(frames_uint8: np.ndarray, mask: np.ndarray, pred: np.ndarray, *,
                         tubelet: int, patch: int, norm_pix: bool = True,
                         num_frames: int = 4) -> np.ndarray:
  """Three rows (original, masked input, reconstruction) of `num_frames` evenly spaced frames.

  Returns uint8 [3 * H + 2 * sep, K * W + (K - 1) * sep, 3], K = min(num_frames, T), sep = 2
  white pixels. See `reconstruct_video` for the arguments.
  """
  frames_uint8 = np.asarray(frames_uint8)
  if frames_uint8.dtype != np.uint8 or frames_uint8.ndim != 4:
    raise ValueError(f'frames must be uint8 [T, H, W, 3], got {frames_uint8.dtype} '
                     f'{frames_uint8.shape}')
  t_len = frames_uint8.shape[0]
  idx = np.unique(np.linspace(0, t_len - 1, min(num_frames, t_len)).round().astype(int))
  rows = [frames_uint8, masked_video(frames_uint8, mask, tubelet=tubelet, patch=patch),
          reconstruct_video(frames_uint8, mask, pred, tubelet=tubelet, patch=patch,
                            norm_pix=norm_pix)]
  rows = [_tile_row(r[idx]) for r in rows]
  sep = np.full((_SEP, rows[0].shape[1], 3), 255, np.uint8)
  return np.concatenate([rows[0], sep, rows[1], sep, rows[2]], axis=0)


@functools.partial(nnx.jit, static_argnames=('num_masked',))
def _predict(model, frames_uint8, mask, num_masked):
  x, _ = model_lib.normalize(frames_uint8)
  return model(x, mask, num_masked=num_masked, deterministic=True)


def reconstruct_batch(model: nnx.Module, frames_uint8, mask, num_masked: int) -> np.ndarray:
  """Deterministic predictions for the masked tokens: float32 [B, num_masked, patch_dim].

  frames_uint8: uint8 [B, T, H, W, 3]; mask: bool [B, t, h, w] with `num_masked` Trues per row.
  """
  mask = np.asarray(mask, bool)
  counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
  if np.any(counts != num_masked):
    raise ValueError(f'every mask row must mask {num_masked} tokens, got {counts.tolist()}')
  return np.asarray(jax.device_get(_predict(model, jax.numpy.asarray(frames_uint8),
                                            jax.numpy.asarray(mask), num_masked)))
