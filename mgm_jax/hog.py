"""Histogram-of-oriented-gradients (HOG) reconstruction targets, in pure JAX.

`cell_histograms` is the un-normalised cell stage of scikit-image's `skimage.feature.hog` for one
channel, reproduced exactly up to float32 rounding of the sums (tested against skimage):

- gradients by central differences [-1, 0, 1] along rows and columns; the first and last row of
  the row gradient and the first and last column of the column gradient are 0 (skimage's
  `_hog_channel_gradient`);
- magnitude = hypot(g_row, g_col); unsigned orientation atan2(g_row, g_col) folded into
  [0, 180) degrees;
- hard binning (no interpolation between bins or cells): bin i collects the pixels with
  180 / bins * i <= orientation < 180 / bins * (i + 1) (skimage's `_hoghistogram.pyx`), each
  adding its magnitude;
- each cell's sums divided by the cell area cell * cell.

skimage then normalises overlapping blocks of cells (L2-Hys by default). We do not:
`hog_target` L2-normalises the histograms of each token's patch instead, one vector of
(patch // cell)**2 * bins values per token, frame and channel.

`hog_target` computes HOG per RGB channel separately (MaskFeat's choice; skimage instead keeps,
per pixel, the channel with the largest gradient), on every frame independently and on the whole
frame, so gradients cross patch borders and are zero only at the frame border.

MaskFeat's own HOG (`HOGLayerC` in facebookresearch/SlowFast `slowfast/models/operators.py`, with
the labels built in `slowfast/models/masked.py`) differs from this module in that it: uses 3x3
Sobel kernels on a reflect-padded frame (so border pixels have gradients too) instead of
[-1, 0, 1] with zero borders; sums magnitudes per cell without dividing by the cell area;
optionally weights magnitudes by a Gaussian window; L2-normalises each cell's bins on their own
(per cell and channel) rather than the whole patch; for video, takes one frame per tubelet
(temporal stride) instead of every frame; and orders a token's values channel first
(channel, bin, cell row, cell column).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _central_difference(x: Array, axis: int) -> Array:
  """x[i + 1] - x[i - 1] along `axis`, 0 at its first and last index (skimage's gradient)."""
  n = x.shape[axis]
  if n < 3:
    return jnp.zeros_like(x)
  diff = (jax.lax.slice_in_dim(x, 2, n, axis=axis)
          - jax.lax.slice_in_dim(x, 0, n - 2, axis=axis))
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  return jnp.pad(diff, pad)


def _skimage_bin(degrees: float, bins: int) -> int:
  """skimage's bin i for an orientation: 180 / bins * i <= degrees < 180 / bins * (i + 1).

  The edges are evaluated in float64, as in `_hoghistogram.pyx`.
  """
  width = 180. / bins
  return next(i for i in range(bins) if width * i <= degrees < width * (i + 1))


def _orientation_bins(g_row: Array, g_col: Array, bins: int) -> Array:
  """Hard bin index in [0, bins) of the unsigned orientation atan2(g_row, g_col) mod 180 deg.

  The gradient is folded into the upper half plane (g_row >= 0, and g_col >= 0 where
  g_row == 0), so the angle is in [0, pi] and 180 deg wraps to bin 0 exactly as in skimage. The
  bin is floor(angle / (pi / bins)) in float32, clipped to the last bin (an angle just below
  180 deg may round up to pi). float32 rounding can put an angle within ~1e-5 deg of an edge on
  the wrong side where skimage's float64 does not. The edges that float gradients actually meet
  or nearly meet, e.g. (1/3, -1/3 + 1 ulp) from quantised pixels, are 45, 90 and 135 deg (the
  only angles with rational tangents besides 0): on which side of those lines a gradient lies is
  decided exactly by comparisons and the bin corrected to skimage's.
  """
  x = jnp.where(g_row < 0, -g_col, g_col)
  x = jnp.where(g_row == 0, jnp.abs(g_col), x)
  y = jnp.abs(g_row)
  angle = jnp.arctan2(y, x)  # [0, pi]
  index = jnp.floor(angle * np.float32(bins / np.pi)).astype(jnp.int32)
  index = jnp.clip(index, 0, bins - 1)
  # (degrees, angle above the line, angle below it), exact for float x and y >= 0.
  for degrees, above, below in ((45., y > x, y < x), (90., x < 0, x > 0),
                                (135., x < -y, x > -y)):
    on = _skimage_bin(degrees, bins)
    under = on - 1 if 180. / bins * on == degrees else on  # bin just below the line
    index = jnp.where(above, jnp.maximum(index, on), index)
    index = jnp.where(below, jnp.minimum(index, under), index)
    index = jnp.where(~above & ~below, on, index)  # on the line (or a zero gradient: no vote)
  return index


def cell_histograms(images: Array, cell: int = 8, bins: int = 9) -> Array:
  """Un-normalised HOG cell histograms of single-channel images, as skimage computes them.

  Args:
    images: float [..., H, W], one channel; H and W multiples of `cell`.
    cell: cell side in pixels (skimage's pixels_per_cell=(cell, cell)).
    bins: orientation bins over [0, 180) degrees (skimage's `orientations`).

  Returns:
    float32 [..., H / cell, W / cell, bins]: per cell and bin, the sum of the gradient magnitudes
    of the cell's pixels whose orientation falls in the bin, divided by cell * cell.

  Raises:
    ValueError: if `cell` or `bins` is not positive, or H or W is not a multiple of `cell`.
  """
  images = jnp.asarray(images, jnp.float32)
  if cell < 1:
    raise ValueError(f'cell must be positive, got {cell}')
  if bins < 1:
    raise ValueError(f'bins must be positive, got {bins}')
  if images.ndim < 2:
    raise ValueError(f'images must be [..., H, W], got shape {images.shape}')
  *lead, h, w = images.shape
  if h % cell or w % cell:
    raise ValueError(f'images H={h} and W={w} must be multiples of cell={cell}')
  g_row = _central_difference(images, axis=-2)
  g_col = _central_difference(images, axis=-1)
  magnitude = jnp.hypot(g_row, g_col)
  votes = jax.nn.one_hot(_orientation_bins(g_row, g_col, bins), bins, dtype=jnp.float32)
  votes = votes * magnitude[..., None]  # [..., H, W, bins]
  votes = votes.reshape(*lead, h // cell, cell, w // cell, cell, bins)
  return jnp.sum(votes, axis=(-4, -2)) / np.float32(cell * cell)


def hog_target(video01: Array, tubelet: int, patch: int, cell: int = 8, bins: int = 9,
               eps: float = 1e-6) -> Array:
  """Per-token HOG target of a [0, 1] video [B, T, H, W, C], float32 [B, N, D].

  N = (T / tubelet) * (H / patch) * (W / patch) tokens in (t, h, w) order, as
  `mgm_jax.loss.patchify`; D = tubelet * (patch // cell)**2 * bins * C values per token, ordered
  (frame in tubelet, cell row, cell col, bin, channel), channel fastest. Histograms come from
  `cell_histograms` on each whole frame and channel separately; then for each token, frame of
  its tubelet and channel, the (patch // cell)**2 * bins values are divided by (their L2 norm +
  eps), so a textured patch has norm ~1 and a flat one is all 0. No gradient flows into the
  target.

  Args:
    video01: float [B, T, H, W, C] in [0, 1].
    tubelet: frames per token; T must be a multiple.
    patch: token side in pixels; a multiple of `cell`, and H and W must be multiples of it.
    cell: HOG cell side in pixels.
    bins: orientation bins over [0, 180) degrees.
    eps: added to each patch's L2 norm.

  Returns:
    float32 [B, N, tubelet * (patch // cell)**2 * bins * C].

  Raises:
    ValueError: naming the field (video01, tubelet, patch, cell, bins) that is out of contract.
  """
  video01 = jnp.asarray(video01, jnp.float32)
  if video01.ndim != 5:
    raise ValueError(f'video01 must be [B, T, H, W, C], got shape {video01.shape}')
  for name, value in (('tubelet', tubelet), ('patch', patch), ('cell', cell), ('bins', bins)):
    if value < 1:
      raise ValueError(f'{name} must be positive, got {value}')
  b, t, h, w, c = video01.shape
  if patch % cell:
    raise ValueError(f'patch={patch} must be a multiple of cell={cell}')
  if h % patch or w % patch:
    raise ValueError(f'video01 H={h} and W={w} must be multiples of patch={patch}')
  if t % tubelet:
    raise ValueError(f'video01 T={t} must be a multiple of tubelet={tubelet}')
  k = patch // cell
  frames = jnp.moveaxis(video01, -1, 2)  # [B, T, C, H, W]
  hist = cell_histograms(frames, cell, bins)  # [B, T, C, H / cell, W / cell, bins]
  hist = hist.reshape(b, t // tubelet, tubelet, c, h // patch, k, w // patch, k, bins)
  # -> [B, t, h, w, frame, C, cell row, cell col, bin]: one row per (token, frame, channel).
  hist = hist.transpose(0, 1, 4, 6, 2, 3, 5, 7, 8)
  hist = hist.reshape(*hist.shape[:6], k * k * bins)
  norm = jnp.sqrt(jnp.sum(jnp.square(hist), axis=-1, keepdims=True))
  hist = hist / (norm + eps)
  hist = hist.reshape(*hist.shape[:6], k, k, bins)
  # -> [B, t, h, w, frame, cell row, cell col, bin, C].
  hist = hist.transpose(0, 1, 2, 3, 4, 6, 7, 8, 5)
  n = (t // tubelet) * (h // patch) * (w // patch)
  return jax.lax.stop_gradient(hist.reshape(b, n, tubelet * k * k * bins * c))
