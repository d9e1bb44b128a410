"""Tests for input_pipeline/transforms.py: crops, resizes and flips keep motion aligned."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from input_pipeline import transforms
from input_pipeline import clip as clip_lib

Clip = clip_lib.Clip
MOTION_FROM_FRAME_DIFF = clip_lib.MOTION_FROM_FRAME_DIFF
MOTION_FROM_VECTORS = clip_lib.MOTION_FROM_VECTORS

_DX, _DY = 3.0, -2.0  # the square's flow, pixels per frame


def _square_clip(height=96, width=128, top=40, left=64, side=16, num_frames=4,
                 source=MOTION_FROM_VECTORS, seed=0):
  """A textured dark clip with a bright square and motion in exactly the square's cells.

  The square is cell-aligned (top, left, side multiples of 8) so that "motion under the square"
  is exact in the source.
  """
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 60, (num_frames, height, width, 3), dtype=np.uint8)
  frames[:, top:top + side, left:left + side] = 250
  grid = (-(-height // 8), -(-width // 8))
  magnitude = np.zeros((num_frames, *grid), np.float32)
  rows = slice(top // 8, (top + side) // 8)
  cols = slice(left // 8, (left + side) // 8)
  magnitude[:, rows, cols] = np.hypot(_DX, _DY)
  flow = None
  if source == MOTION_FROM_VECTORS:
    flow = np.zeros((num_frames, *grid, 2), np.float32)
    flow[:, rows, cols] = (_DX, _DY)
  else:
    magnitude[:, rows, cols] = 40.0
  clip = Clip(frames=frames, flow=flow, magnitude=magnitude,
              has_vectors=np.ones(num_frames, bool), motion_source=source,
              frame_indices=np.arange(num_frames, dtype=np.int64) * 2, name="square")
  clip.check()
  return clip


def _centroid(mask):
  ys, xs = np.nonzero(mask)
  return np.array([ys.mean(), xs.mean()])


def _assert_motion_under_square(clip):
  """The moving cells' centroid lies within one cell (8 px) of the bright pixels' centroid."""
  for t in range(clip.num_frames):
    bright = clip.frames[t].min(axis=-1) > 150
    moving = clip.magnitude[t] > 0
    assert bright.any() and moving.any()
    moving_px = np.kron(moving, np.ones((8, 8), bool))[:bright.shape[0], :bright.shape[1]]
    assert np.abs(_centroid(moving_px) - _centroid(bright)).max() <= 8.0
    # Every moving cell touches the square (grown by one cell).
    grown = np.zeros_like(bright)
    ys, xs = np.nonzero(bright)
    grown[max(ys.min() - 8, 0):ys.max() + 9, max(xs.min() - 8, 0):xs.max() + 9] = True
    assert grown[moving_px].all()


def test_crop_size_candidates_match_videomae():
  # Short side 240: int(240 * s) = 240, 210, 180, 158; none is within 3 px of 224.
  sides = [240, 210, 180, 158]
  expected = [(sides[i], sides[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1]
  assert transforms.crop_size_candidates((240, 320), 224) == expected
  assert len(expected) == 10
  # Short side 226: 226 snaps to 224; int(226 * .875) = 197, 169, 149.
  assert transforms.crop_size_candidates((226, 300), 224, max_distort=0) == [
      (224, 224), (197, 197), (169, 169), (149, 149)]
  # (h, w) output sizes snap each side to its own target.
  assert transforms.crop_size_candidates((96, 128), (64, 96), max_distort=0)[3] == (64, 63)


def test_fixed_offset_candidates_match_videomae():
  h_step, w_step = (240 - 180) // 4, (320 - 210) // 4  # 15, 27
  offsets = transforms.fixed_offset_candidates((240, 320), (180, 210))
  assert len(offsets) == 13
  assert offsets[:5] == [(0, 0), (0, 4 * w_step), (4 * h_step, 0), (4 * h_step, 4 * w_step),
                         (2 * h_step, 2 * w_step)]
  assert set(offsets[5:]) == {(2 * h_step, 0), (2 * h_step, 4 * w_step), (4 * h_step, 2 * w_step),
                              (0, 2 * w_step), (h_step, w_step), (h_step, 3 * w_step),
                              (3 * h_step, w_step), (3 * h_step, 3 * w_step)}
  assert len(transforms.fixed_offset_candidates((240, 320), (180, 210), more_fix_crop=False)) == 5


def test_multi_scale_crop_shapes_dtypes_and_passthrough():
  clip = _square_clip()
  out = transforms.multi_scale_crop(clip, 64, np.random.default_rng(0))
  assert out.frames.shape == (4, 64, 64, 3) and out.frames.dtype == np.uint8
  assert out.flow.shape == (4, 8, 8, 2) and out.flow.dtype == np.float32
  assert out.magnitude.shape == (4, 8, 8) and out.magnitude.dtype == np.float32
  assert out.motion_source == clip.motion_source and out.name == clip.name
  np.testing.assert_array_equal(out.frame_indices, clip.frame_indices)
  np.testing.assert_array_equal(out.has_vectors, clip.has_vectors)
  rect = transforms.multi_scale_crop(clip, (48, 80), np.random.default_rng(0))
  assert rect.frames.shape == (4, 48, 80, 3) and rect.magnitude.shape == (4, 6, 10)


def test_multi_scale_crop_is_deterministic_by_seed():
  clip = _square_clip()
  a = transforms.multi_scale_crop(clip, 64, np.random.default_rng(7))
  b = transforms.multi_scale_crop(clip, 64, np.random.default_rng(7))
  np.testing.assert_array_equal(a.frames, b.frames)
  np.testing.assert_array_equal(a.flow, b.flow)
  outs = {transforms.multi_scale_crop(clip, 64, np.random.default_rng(s)).frames.tobytes()
          for s in range(20)}
  assert len(outs) > 5


def test_multi_scale_crop_box_is_a_candidate_and_flow_is_scaled():
  """Identifies the crop by matching PIL on every candidate box; checks the flow factors."""
  clip = _square_clip(height=96, width=128)
  pairs = transforms.crop_size_candidates((96, 128), 64)
  assert (64, 64) in pairs  # int(96 * .66) = 63 snaps to 64
  seen_pairs = set()
  for seed in range(30):
    out = transforms.multi_scale_crop(clip, 64, np.random.default_rng(seed))
    matches = []
    for h, w in pairs:
      for top, left in set(transforms.fixed_offset_candidates((96, 128), (h, w))):
        ref = Image.fromarray(clip.frames[0]).resize(
            (64, 64), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if np.array_equal(np.asarray(ref), out.frames[0]):
          matches.append((h, w))
    assert matches, f"seed {seed}: output matches no VideoMAE candidate box"
    h, w = matches[0]
    seen_pairs.add((h, w))
    sx, sy = 64 / w, 64 / h
    moving = out.magnitude[0] > 0
    if moving.any():
      np.testing.assert_allclose(out.flow[0][moving], np.broadcast_to(
          [_DX * sx, _DY * sy], out.flow[0][moving].shape), rtol=1e-6)
      np.testing.assert_allclose(out.magnitude[0][moving],
                                 np.hypot(_DX, _DY) * np.sqrt(sx * sy), rtol=1e-6)
      np.testing.assert_array_equal(out.flow[0][~moving], 0.0)
  assert len(seen_pairs) >= 4


@pytest.mark.parametrize("size", [64, (48, 80), (64, 32)])
@pytest.mark.parametrize("flip", [False, True])
def test_motion_stays_under_the_square(size, flip):
  clip = _square_clip()
  checked = 0
  for seed in range(25):
    out = transforms.multi_scale_crop(clip, size, np.random.default_rng(seed))
    if flip:
      out = transforms.horizontal_flip(out)
    if (out.frames.min(axis=-1) > 150).sum() < 64 * out.num_frames:
      continue  # the square was (mostly) cropped away
    _assert_motion_under_square(out)
    checked += 1
  assert checked >= 5


def test_center_crop_without_resize_is_a_slice():
  clip = _square_clip()
  out = transforms.center_crop(clip, 64)
  np.testing.assert_array_equal(out.frames, clip.frames[:, 16:80, 32:96])
  np.testing.assert_array_equal(out.magnitude, clip.magnitude[:, 2:10, 4:12])
  np.testing.assert_array_equal(out.flow, clip.flow[:, 2:10, 4:12])


def test_center_crop_with_resize_short_scales_motion():
  clip = _square_clip()  # 96 x 128 -> short side 64: 64 x 85, centre 64 x 64, scale 2/3
  out = transforms.center_crop(clip, 64, resize_short=64)
  assert out.frames.shape == (4, 64, 64, 3) and out.magnitude.shape == (4, 8, 8)
  moving = out.magnitude[0] > 0
  np.testing.assert_allclose(out.flow[0][moving][0], [_DX * 2 / 3, _DY * 2 / 3], rtol=1e-6)
  np.testing.assert_allclose(out.magnitude[0][moving], np.hypot(_DX, _DY) * 2 / 3, rtol=1e-6)
  _assert_motion_under_square(out)


def test_frame_diff_magnitude_is_resampled_not_scaled():
  clip = _square_clip(source=MOTION_FROM_FRAME_DIFF)
  out = transforms.center_crop(clip, 64, resize_short=64)
  assert out.flow is None
  assert set(np.unique(out.magnitude)) == {0.0, 40.0}
  _assert_motion_under_square(out)
  flipped = transforms.horizontal_flip(out)
  assert flipped.flow is None
  _assert_motion_under_square(flipped)


def test_center_crop_rejects_small_frames():
  with pytest.raises(ValueError, match="smaller than the crop"):
    transforms.center_crop(_square_clip(), 112)
  with pytest.raises(ValueError, match="smaller than the crop"):
    transforms.center_crop(_square_clip(), (64, 96), resize_short=64)


def test_horizontal_flip_mirrors_and_negates_dx():
  clip = _square_clip()
  out = transforms.horizontal_flip(clip)
  np.testing.assert_array_equal(out.frames, clip.frames[:, :, ::-1])
  assert out.frames.flags.c_contiguous
  np.testing.assert_array_equal(out.magnitude, clip.magnitude[:, :, ::-1])
  np.testing.assert_array_equal(out.flow[..., 0], -clip.flow[:, :, ::-1, 0])
  np.testing.assert_array_equal(out.flow[..., 1], clip.flow[:, :, ::-1, 1])
  _assert_motion_under_square(out)
  twice = transforms.horizontal_flip(out)
  np.testing.assert_array_equal(twice.frames, clip.frames)
  np.testing.assert_array_equal(twice.flow, clip.flow)


def test_horizontal_flip_with_a_partial_last_cell():
  clip = _square_clip(height=16, width=20, top=0, left=0, side=8)  # grid 2 x 3, last cell 4 px
  out = transforms.horizontal_flip(clip)
  assert out.magnitude.shape == (4, 2, 3)
  np.testing.assert_array_equal(out.magnitude[0, 0] > 0, [False, False, True])
  twice = transforms.horizontal_flip(out)
  np.testing.assert_array_equal(twice.magnitude, clip.magnitude)


@pytest.mark.parametrize("size", [100, 0, -8, (224, 100), (224,), (8, 8, 8)])
def test_bad_sizes_raise(size):
  clip = _square_clip()
  with pytest.raises(ValueError, match="size"):
    transforms.multi_scale_crop(clip, size, np.random.default_rng(0))
  with pytest.raises(ValueError, match="size"):
    transforms.center_crop(clip, size)


def test_resized_crop_box_statistics_are_within_range():
  scale, ratio = (0.08, 1.0), (0.75, 1.3333)
  areas, aspects = [], []
  for seed in range(300):
    top, left, h, w = transforms.resized_crop_box((240, 320), np.random.default_rng(seed))
    assert 0 <= top <= 240 - h and 0 <= left <= 320 - w and h > 0 and w > 0
    areas.append(h * w / (240 * 320))
    aspects.append(w / h)
  areas, aspects = np.array(areas), np.array(aspects)
  # Rounding each side to whole pixels moves the area and the aspect slightly.
  assert areas.min() >= scale[0] * 0.9 and areas.max() <= scale[1]
  assert aspects.min() >= ratio[0] * 0.97 and aspects.max() <= ratio[1] * 1.03
  # Area uniform in [0.08, 1] (mean 0.54; large tall boxes do not fit a 240 x 320 frame and are
  # redrawn, so lower: 0.46 here); log-uniform aspect: about half the boxes are wider than tall.
  assert 0.40 < areas.mean() < 0.54
  assert 0.40 < (aspects > 1).mean() < 0.70
  assert areas.max() > 0.9 and areas.min() < 0.15
  # The ratio is width / height: an asymmetric range only gives wide boxes.
  for seed in range(50):
    _, _, h, w = transforms.resized_crop_box((240, 320), np.random.default_rng(seed),
                                             ratio=(1.5, 2.0))
    assert 1.5 * 0.97 <= w / h <= 2.0 * 1.03


@pytest.mark.parametrize("image_hw, expected", [
    ((64, 200), (0, 57, 64, 85)),  # too wide: full height, w = round(64 * 1.3333)
    ((200, 64), (57, 0, 85, 64)),  # too tall: full width, h = round(64 / 0.75)
    ((96, 100), (0, 0, 96, 100)),  # aspect within range: the whole frame
])
def test_resized_crop_box_falls_back_to_a_central_crop(image_hw, expected):
  # An area above the frame's never fits, so every attempt fails.
  box = transforms.resized_crop_box(image_hw, np.random.default_rng(0), scale=(2.0, 3.0))
  assert box == expected


def test_random_resized_crop_matches_pil_on_its_box_and_is_deterministic():
  clip = _square_clip()
  for seed in range(5):
    out = transforms.random_resized_crop(clip, 64, np.random.default_rng(seed))
    top, left, h, w = transforms.resized_crop_box((96, 128), np.random.default_rng(seed))
    assert out.frames.shape == (4, 64, 64, 3) and out.magnitude.shape == (4, 8, 8)
    ref = Image.fromarray(clip.frames[1]).resize(
        (64, 64), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    np.testing.assert_array_equal(out.frames[1], np.asarray(ref))
    again = transforms.random_resized_crop(clip, 64, np.random.default_rng(seed))
    np.testing.assert_array_equal(out.frames, again.frames)
    np.testing.assert_array_equal(out.flow, again.flow)
    moving = out.magnitude[0] > 0
    if moving.any():
      np.testing.assert_allclose(out.flow[0][moving][0], [_DX * 64 / w, _DY * 64 / h], rtol=1e-6)
  outs = {transforms.random_resized_crop(clip, 64, np.random.default_rng(s)).frames.tobytes()
          for s in range(10)}
  assert len(outs) == 10


@pytest.mark.parametrize("size", [64, (48, 80)])
def test_random_resized_crop_keeps_motion_under_the_square(size):
  clip = _square_clip()
  checked = 0
  for seed in range(40):
    out = transforms.random_resized_crop(clip, size, np.random.default_rng(seed), scale=(0.3, 1.0))
    if (out.frames.min(axis=-1) > 150).sum() < 64 * out.num_frames:
      continue  # the square was (mostly) cropped away
    _assert_motion_under_square(out)
    checked += 1
  assert checked >= 5
