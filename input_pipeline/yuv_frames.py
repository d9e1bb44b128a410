"""Decoded frames kept as the decoder's YUV pictures until a crop asks for RGB.

The input pipeline decodes a clip, then crops and resizes it (`transforms.crop_resize`). Converting
every full frame to RGB and then resampling the crop with PIL costs about 0.85 ms per frame at
568x320 -> 224 (0.15 ms conversion, 0.7 ms resize): more than everything else the pipeline does
beyond decoding. `YuvFrames` holds the decoded `av.VideoFrame`s instead, and `crop_resize` copies
only the crop's planes out of each picture and lets FFmpeg's swscale convert and resize them in
one pass (bilinear, antialiased when shrinking, one thread): ~0.3 ms per frame.

What differs from the eager path (RGB first, then PIL's bilinear filter), measured on textured
generated videos (bounds tested in tests/test_yuv_frames.py):
* the resampling filter is swscale's bilinear, not PIL's: luma differs by ~0.5 grey levels on
  average, with no shift (alignment is tested);
* chroma is resized on its own 4:2:0 grid and only then converted, so colour edges are a little
  softer: RGB differs by 1.3-1.9 levels on average at VideoMAE's crop scales (up to 3 for a 2.2x
  shrink). A crop starting at an odd row or column interpolates its chroma halfway between two
  samples (`_crop_picture`), so colour stays aligned with luma;
* only integer crop boxes of 8-bit 4:2:0 pictures take this path (a box of the output's own size
  is converted only, not resized). Fractional boxes (the evaluation crop after `resize_short`)
  and other pixel formats are converted to RGB first (`np.asarray`) and take the eager path,
  bit-identical to before.

A `YuvFrames` lives inside one map call (decode, crop): it cannot be pickled, so a clip holding
one must not cross a grain process boundary.

The input pipeline keeps YUV for training clips only (`pipeline.LoadClip` with `train`: every
multi-scale and random-resized crop box is integer, so every training view takes this path);
evaluation clips, the multi-view test and the analysis tools decode to RGB and use PIL as before.
Everything that does not crop sees the frames as uint8 [T, H, W, 3] through `np.asarray`.
"""

from __future__ import annotations

import av
from av.video import reformatter as av_reformatter
import numpy as np

# 8-bit planar 4:2:0 formats whose planes can be cropped directly (the j variant is full range).
_CROPPABLE = ("yuv420p", "yuvj420p")
# Bilinear, with swscale's exact C arithmetic: the same output on every CPU (no faster here
# without the flags).
_INTERPOLATION = (av_reformatter.Interpolation.BILINEAR | av_reformatter.Interpolation.ACCURATE_RND
                  | av_reformatter.Interpolation.BITEXACT)


def to_rgb(converter: av_reformatter.VideoReformatter, frame: av.VideoFrame) -> np.ndarray:
  """uint8 [H, W, 3]: the whole picture in RGB, the eager path's conversion (`decode` uses it
  too, so `np.asarray(YuvFrames)` is the eager frames bit for bit)."""
  return converter.reformat(frame, format="rgb24").to_ndarray()


class YuvFrames:
  """T decoded pictures (repeats allowed: the same object at several positions) of one size.

  Quacks like a uint8 [T, H, W, 3] array where a clip's frames are only inspected (`shape`,
  `dtype`, `len`); `np.asarray` converts every picture (cached).
  """

  dtype = np.dtype(np.uint8)
  ndim = 4

  def __init__(self, pictures: list[av.VideoFrame]):
    if not pictures:
      raise ValueError("YuvFrames needs at least one picture")
    sizes = {(p.height, p.width) for p in pictures}
    if len(sizes) != 1:
      raise ValueError(f"pictures of different sizes {sorted(sizes)}")
    self.pictures = list(pictures)
    self.shape = (len(pictures), *sizes.pop(), 3)
    self._rgb: np.ndarray | None = None

  def __len__(self) -> int:
    return self.shape[0]

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    if self._rgb is None:
      converter = av_reformatter.VideoReformatter()
      converted: dict[int, np.ndarray] = {}
      for p in self.pictures:  # a repeated picture (padding) is converted once
        if id(p) not in converted:
          converted[id(p)] = to_rgb(converter, p)
      self._rgb = np.stack([converted[id(p)] for p in self.pictures])
    if dtype is not None and np.dtype(dtype) != self._rgb.dtype:
      return self._rgb.astype(dtype)
    return self._rgb.copy() if copy else self._rgb  # never hand out the cache to write into

  def crop_resize(self, box: tuple[float, float, float, float],
                  out_hw: tuple[int, int]) -> np.ndarray | None:
    """uint8 [T, out_h, out_w, 3]: `box` = (top, left, height, width) of every picture, resized;
    None where this path does not apply (module docstring): the caller takes the eager path."""
    top, left, crop_h, crop_w = (float(v) for v in box)
    _, height, width, _ = self.shape
    if (not all(v.is_integer() for v in (top, left, crop_h, crop_w))
        or any(p.format.name not in _CROPPABLE for p in self.pictures)):
      return None
    top, left, crop_h, crop_w = int(top), int(left), int(crop_h), int(crop_w)
    if top < 0 or left < 0 or crop_h <= 0 or crop_w <= 0 or top + crop_h > height \
        or left + crop_w > width:
      raise ValueError(f"crop box {box} is outside the {height}x{width} frame")
    out_h, out_w = out_hw
    scaler = av_reformatter.VideoReformatter()  # one swscale context for the clip
    out = np.empty((len(self), out_h, out_w, 3), np.uint8)
    done: dict[int, int] = {}
    for t, picture in enumerate(self.pictures):
      if id(picture) in done:  # a repeated frame (padding past the end)
        out[t] = out[done[id(picture)]]
        continue
      done[id(picture)] = t
      crop = _crop_picture(picture, top, left, crop_h, crop_w)
      out[t] = scaler.reformat(crop, width=out_w, height=out_h, format="rgb24",
                               interpolation=_INTERPOLATION, threads=1).to_ndarray()
    return out


def _crop_picture(picture: av.VideoFrame, top: int, left: int, height: int,
                  width: int) -> av.VideoFrame:
  """A new 4:2:0 picture holding the box's pixels (same colour range and space).

  Luma is copied exactly. Chroma sample j of the crop sits where luma column left + 2j is: for
  an even `left` that is source sample left / 2 + j, for an odd one halfway between samples
  left // 2 + j and the next, so their mean is taken (rows likewise; the last sample repeats at
  the edge). Copying sample left // 2 + j instead would shift colour against luma by half a
  pixel in every crop with an odd offset, about half of VideoMAE's fixed crop positions.
  """
  crop = av.VideoFrame(width, height, picture.format.name)
  crop.colorspace, crop.color_range = picture.colorspace, picture.color_range
  for k, (src, dst) in enumerate(zip(picture.planes, crop.planes)):
    src_rows = np.frombuffer(src, np.uint8).reshape(src.height, src.line_size)[:, :src.width]
    dst_rows = np.frombuffer(dst, np.uint8).reshape(dst.height, dst.line_size)
    if k == 0:
      dst_rows[:, :width] = src_rows[top:top + height, left:left + width]
      continue
    y0, x0, h, w = top // 2, left // 2, dst.height, dst.width
    odd_y, odd_x = top % 2, left % 2
    if not (odd_y or odd_x):
      dst_rows[:, :w] = src_rows[y0:y0 + h, x0:x0 + w]
      continue
    rows = np.minimum(np.arange(y0, y0 + h + odd_y), src.height - 1)
    cols = np.minimum(np.arange(x0, x0 + w + odd_x), src.width - 1)
    block = src_rows[np.ix_(rows, cols)].astype(np.uint16)
    if odd_y:
      block = (block[:-1] + block[1:] + 1) >> 1
    if odd_x:
      block = (block[:, :-1] + block[:, 1:] + 1) >> 1
    dst_rows[:, :w] = block
  return crop
