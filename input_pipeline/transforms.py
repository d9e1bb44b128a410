"""Spatial transforms applied consistently to a clip's frames and its motion grid.

Every transform here is a crop of the source frame (a box in source pixel coordinates, possibly
fractional), resized to the output size, or a horizontal mirror. The frames are resampled with
PIL's bilinear filter (antialiased when shrinking, as in VideoMAE's `GroupMultiScaleCrop`), or,
for frames the decoder kept in YUV (the input pipeline), cropped and resized by swscale's
bilinear filter in one pass (`yuv_frames`: ~1 grey level apart, 3x less CPU); the
motion grid is resampled so that it stays aligned with the output frames:

* The output grid is (S_h / 8, S_w / 8): output sizes must be multiples of `MOTION_CELL`.
* Output cell (i, j) covers output pixels [8i, 8i + 8) x [8j, 8j + 8). It takes the source cell
  under the centre of that block (nearest neighbour), mapped back through the crop box.
* Flow is a displacement in pixels, so it is scaled with the image: dx by S_w / crop_w and dy by
  S_h / crop_h. A horizontal flip negates dx.
* Magnitude from motion vectors ("mv") or optical flow ("flow") is scaled by ONE factor per transform, the geometric mean
  sqrt(sx * sy) of the two axis scales. It cannot be recomputed from the scaled flow, because the
  magnitude may be camera-compensated (|flow - camera motion|, not |flow|). The single factor is
  exact for isotropic resizes (every centre crop, and multi-scale crops with w == h) and keeps the
  ranking of cells unchanged, which is what the mask's top-k pooling uses. For anisotropic crops
  (max_distort > 0, and most `random_resized_crop` boxes) it is off by at most
  sqrt(max(sx, sy) / min(sx, sy)) per cell.
* Magnitude from frame differences ("frame_diff") is a luma difference, not a displacement: it is
  resampled only, never scaled.
* A clip's `extra_frames` are cropped like its frames, its `frame_flow` like its flow.

Frames stay uint8; normalisation happens later, on device. No JAX here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image

from input_pipeline import clip as clip_lib
from input_pipeline import yuv_frames

Clip = clip_lib.Clip
MOTION_CELL = clip_lib.MOTION_CELL

Size = int | tuple[int, int]

# VideoMAE's pretraining scales and its size-snapping tolerance (crop sides within 3 px of the
# output side are snapped to it).
DEFAULT_SCALES = (1.0, 0.875, 0.75, 0.66)
_SNAP_PX = 3


def _as_hw(size: Size) -> tuple[int, int]:
  """Returns `size` as (height, width), checking both are positive multiples of MOTION_CELL."""
  if isinstance(size, (int, np.integer)):
    hw = (int(size), int(size))
  else:
    if len(size) != 2:
      raise ValueError(f"size must be an int or (height, width), got {size!r}")
    hw = (int(size[0]), int(size[1]))
  if any(s <= 0 or s % MOTION_CELL for s in hw):
    raise ValueError(f"size {hw} must be positive multiples of {MOTION_CELL} (the motion cell)")
  return hw


def crop_size_candidates(
    image_hw: tuple[int, int],
    size: Size,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    max_distort: int = 1,
) -> list[tuple[int, int]]:
  """The (crop_h, crop_w) pairs that `multi_scale_crop` chooses from, uniformly.

  As in VideoMAE: side lengths are int(short_side * scale); a side within 3 px of the output side
  is snapped to it; height index i and width index j are paired when |i - j| <= max_distort,
  enumerated with i outer. Unlike VideoMAE, sides are clamped to the image (snapping could
  otherwise make a crop larger than a frame a little smaller than `size`).

  Args:
    image_hw: source frame (height, width).
    size: output size, int or (height, width).
    scales: fractions of the short side.
    max_distort: how far apart (in scale steps) height and width may be.

  Returns:
    A list of (crop_h, crop_w).
  """
  out_h, out_w = _as_hw(size)
  image_h, image_w = image_hw
  base = min(image_h, image_w)
  sides = [int(base * s) for s in scales]
  crop_h = [min(out_h if abs(s - out_h) < _SNAP_PX else s, image_h) for s in sides]
  crop_w = [min(out_w if abs(s - out_w) < _SNAP_PX else s, image_w) for s in sides]
  return [(h, w) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w)
          if abs(i - j) <= max_distort]


def fixed_offset_candidates(
    image_hw: tuple[int, int],
    crop_hw: tuple[int, int],
    *,
    more_fix_crop: bool = True,
) -> list[tuple[int, int]]:
  """The (top, left) offsets of VideoMAE's fixed crop grid, in its order.

  The free space is cut in quarter steps (integer division); the 5 basic positions are the four
  corners and the centre; `more_fix_crop` adds the 4 edge centres and 4 quarter points (13 in all).
  Positions may repeat when the free space is small; repeats keep their weight in the draw.

  Args:
    image_hw: source frame (height, width).
    crop_hw: crop (height, width), not larger than the frame.
    more_fix_crop: use the 13-position grid instead of the 5-position one.

  Returns:
    A list of (top, left).
  """
  h_step = (image_hw[0] - crop_hw[0]) // 4
  w_step = (image_hw[1] - crop_hw[1]) // 4
  grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # (y, x) in steps: corners, centre
  if more_fix_crop:
    grid += [(2, 0), (2, 4), (4, 2), (0, 2),  # left, right, bottom, top centres
             (1, 1), (1, 3), (3, 1), (3, 3)]  # quarter points
  return [(y * h_step, x * w_step) for y, x in grid]


def _source_cells(start: float, crop: float, out: int, grid: int) -> np.ndarray:
  """Source cell index under the centre of each output cell along one axis (nearest)."""
  centres = (np.arange(out // MOTION_CELL) * MOTION_CELL + MOTION_CELL / 2) * (crop / out)
  return np.clip(np.floor((start + centres) / MOTION_CELL).astype(np.int64), 0, grid - 1)


def _resize_frames(frames: np.ndarray | yuv_frames.YuvFrames,
                   box: tuple[float, float, float, float],
                   out_hw: tuple[int, int]) -> np.ndarray:
  """Crops `box` = (top, left, height, width) from every frame and resizes it bilinearly.

  Frames still in YUV (`decode_clip(keep_yuv=True)`) are cropped and resized by swscale in one
  pass where the box allows it (`yuv_frames`), else converted first and resized here with PIL.
  """
  if isinstance(frames, yuv_frames.YuvFrames):
    out = frames.crop_resize(box, out_hw)
    if out is not None:
      return out
    frames = np.asarray(frames)
  top, left, crop_h, crop_w = box
  out_h, out_w = out_hw
  if (crop_h, crop_w) == out_hw and float(top).is_integer() and float(left).is_integer():
    y, x = int(top), int(left)
    return np.ascontiguousarray(frames[:, y:y + out_h, x:x + out_w])
  pil_box = (left, top, left + crop_w, top + crop_h)
  out = np.empty((frames.shape[0], out_h, out_w, 3), np.uint8)
  for t, frame in enumerate(frames):
    out[t] = np.asarray(
        Image.fromarray(frame).resize((out_w, out_h), Image.Resampling.BILINEAR, box=pil_box))
  return out


def crop_resize(clip: Clip, box: tuple[float, float, float, float],
                out_hw: tuple[int, int]) -> Clip:
  """Crops `box` = (top, left, height, width) in source pixels (fractional allowed) from frames and
  motion, resized to `out_hw` = (height, width) (see the module docstring)."""
  top, left, crop_h, crop_w = box
  out_h, out_w = out_hw
  grid_h, grid_w = clip.magnitude.shape[1:]
  rows = _source_cells(top, crop_h, out_h, grid_h)[:, None]
  cols = _source_cells(left, crop_w, out_w, grid_w)[None, :]
  sy, sx = out_h / crop_h, out_w / crop_w
  magnitude = clip.magnitude[:, rows, cols]
  if clip.magnitude_is_displacement:
    magnitude = magnitude * np.float32(np.sqrt(sx * sy))
  scale = np.array([sx, sy], np.float32)
  flow = None
  if clip.flow is not None:
    flow = clip.flow[:, rows, cols] * scale
  extra = {}
  if clip.extra_frames is not None:
    extra["extra_frames"] = _resize_frames(clip.extra_frames, box, out_hw)
  if clip.frame_flow is not None:
    extra["frame_flow"] = (clip.frame_flow[:, rows, cols] * scale).astype(np.float32, copy=False)
  out = dataclasses.replace(
      clip, frames=_resize_frames(clip.frames, box, out_hw),
      flow=None if flow is None else flow.astype(np.float32, copy=False),
      magnitude=magnitude.astype(np.float32, copy=False), **extra)
  out.check()
  return out


def multi_scale_box(
    image_hw: tuple[int, int],
    size: Size,
    rng: np.random.Generator,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    max_distort: int = 1,
    more_fix_crop: bool = True,
) -> tuple[int, int, int, int]:
  """The (top, left, height, width) box of `multi_scale_crop`, in integer source pixels.

  Draws a (crop_h, crop_w) uniformly from `crop_size_candidates`, then a (top, left) uniformly from
  `fixed_offset_candidates` (arguments as `multi_scale_crop`'s).
  """
  pairs = crop_size_candidates(image_hw, _as_hw(size), scales=scales, max_distort=max_distort)
  crop_hw = pairs[rng.integers(len(pairs))]
  offsets = fixed_offset_candidates(image_hw, crop_hw, more_fix_crop=more_fix_crop)
  top, left = offsets[rng.integers(len(offsets))]
  return (top, left, *crop_hw)


def multi_scale_crop(
    clip: Clip,
    size: Size,
    rng: np.random.Generator,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    max_distort: int = 1,
    more_fix_crop: bool = True,
) -> Clip:
  """VideoMAE's GroupMultiScaleCrop on a clip: one random crop for all frames, then a resize.

  Crops every frame at one `multi_scale_box` and resizes it to `size` (bilinear). The motion
  follows (module docstring).

  Args:
    clip: the decoded clip.
    size: output size, int or (height, width), multiples of 8.
    rng: the random generator (the only source of randomness).
    scales: fractions of the short side.
    max_distort: how far apart (in scale steps) the crop's height and width may be.
    more_fix_crop: 13 fixed positions instead of 5.

  Returns:
    The cropped clip, frames uint8 [T, size_h, size_w, 3], motion grid (size_h / 8, size_w / 8).
  """
  box = multi_scale_box(clip.frames.shape[1:3], size, rng, scales=scales,
                        max_distort=max_distort, more_fix_crop=more_fix_crop)
  return crop_resize(clip, box, _as_hw(size))


def resized_crop_box(
    image_hw: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (0.75, 1.3333),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
  """The (top, left, height, width) box of `random_resized_crop`, in integer source pixels.

  As VideoMAE's `video_transforms._get_param_spatial_crop` (log-scale ratio, no h/w switch): up to
  `attempts` tries of area = uniform(scale) * H * W, aspect w / h = exp(uniform(log ratio)),
  w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first box with 0 < w <= W and
  0 < h <= H is placed uniformly (inclusive offsets). If none fits: the centred crop of the whole
  frame, narrowed to the nearest allowed aspect when the frame's own W / H is outside `ratio`.
  """
  height, width = image_hw
  log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
  for _ in range(attempts):
    area = rng.uniform(*scale) * height * width
    aspect = np.exp(rng.uniform(*log_ratio))
    w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w
  in_ratio = width / height
  h, w = height, width
  if in_ratio < min(ratio):
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    w = int(round(h * max(ratio)))
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    clip: Clip,
    size: Size,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (0.75, 1.3333),
) -> Clip:
  """VideoMAE's fine-tuning crop: one `resized_crop_box` for all frames, resized to `size`.

  The defaults are what VideoMAE's `_aug_frame` passes (scale [0.08, 1.0], aspect [0.75, 1.3333]).
  Unlike VideoMAE (torch bilinear interpolation, not antialiased), the frames are resized with
  PIL's bilinear filter, antialiased when shrinking, like every crop here. The motion follows
  (module docstring; an anisotropic box makes the magnitude factor approximate).

  Args:
    clip: the decoded clip.
    size: output size, int or (height, width), multiples of 8.
    rng: the random generator (the only source of randomness).
    scale: range of the box area as a fraction of the frame area.
    ratio: range of the box aspect ratio, width / height.

  Returns:
    The cropped clip, frames uint8 [T, size_h, size_w, 3], motion grid (size_h / 8, size_w / 8).
  """
  out_hw = _as_hw(size)
  box = resized_crop_box(clip.frames.shape[1:3], rng, scale=scale, ratio=ratio)
  return crop_resize(clip, box, out_hw)


def center_crop(clip: Clip, size: Size, *, resize_short: int | None = None) -> Clip:
  """Evaluation crop: optionally resize the short side to `resize_short`, then crop the centre.

  Like torchvision's Resize(int) + CenterCrop (long side int(resize_short * long / short), offsets
  rounded), but done in one resampling step: the crop box is mapped back to source pixels.

  Args:
    clip: the decoded clip.
    size: output size, int or (height, width), multiples of 8.
    resize_short: the short side to resize to first; None crops the source frames as they are.

  Returns:
    The cropped clip.

  Raises:
    ValueError: if the (resized) frame is smaller than `size`.
  """
  out_h, out_w = _as_hw(size)
  image_h, image_w = clip.frames.shape[1:3]
  scale = 1.0
  resized_h, resized_w = image_h, image_w
  if resize_short is not None:
    short, long = min(image_h, image_w), max(image_h, image_w)
    scale = resize_short / short
    resized_long = int(resize_short * long / short)
    resized_h, resized_w = ((resize_short, resized_long) if image_h <= image_w
                            else (resized_long, resize_short))
  if resized_h < out_h or resized_w < out_w:
    raise ValueError(f"clip {clip.name!r}: frame {(resized_h, resized_w)} (after resize_short="
                     f"{resize_short}) is smaller than the crop {(out_h, out_w)}")
  top = int(round((resized_h - out_h) / 2.0))
  left = int(round((resized_w - out_w) / 2.0))
  return crop_resize(clip, (top / scale, left / scale, out_h / scale, out_w / scale),
                      (out_h, out_w))


def _mirrored_cells(width: int, grid: int) -> np.ndarray:
  """Source cell under the centre of each output cell after mirroring a row of `width` pixels."""
  lo = np.arange(grid) * MOTION_CELL
  centres = (lo + np.minimum(lo + MOTION_CELL, width)) / 2  # a partial last cell: its own centre
  return np.clip(np.floor((width - centres) / MOTION_CELL).astype(np.int64), 0, grid - 1)


def _mirror_frames(frames: np.ndarray) -> np.ndarray:
  """frames[:, :, ::-1], contiguous. Copying whole 3-byte pixels is ~1.7x faster than bytes."""
  pixels = np.ascontiguousarray(frames).view(np.dtype("V3"))[..., 0]  # [T, H, W] of RGB triples
  return np.ascontiguousarray(pixels[:, :, ::-1])[..., None].view(np.uint8)


def horizontal_flip(clip: Clip) -> Clip:
  """Mirrors frames and motion left-right; flow dx is negated (dy and magnitude unchanged)."""
  cols = _mirrored_cells(clip.frames.shape[2], clip.magnitude.shape[2])
  negate_dx = np.array([-1.0, 1.0], np.float32)
  flow = None
  if clip.flow is not None:
    flow = clip.flow[:, :, cols] * negate_dx
  extra = {}
  if clip.extra_frames is not None:
    extra["extra_frames"] = _mirror_frames(clip.extra_frames)
  if clip.frame_flow is not None:
    extra["frame_flow"] = clip.frame_flow[:, :, cols] * negate_dx
  out = dataclasses.replace(clip, frames=_mirror_frames(clip.frames), flow=flow,
                            magnitude=clip.magnitude[:, :, cols], **extra)
  out.check()
  return out
