"""Tests for input_pipeline/views.py: VideoMAE's test views (indices, crops, merge)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from input_pipeline import clip as clip_lib
from input_pipeline import sampling
from input_pipeline import views


# Independent re-statements of VideoMAE's test samplers (kinetics.py / ssv2.py, mode "test"),
# written as plain loops over Python lists the way those loaders index their decoded buffers.

def _kinetics_reference(num_frames, clip_len, stride, num_segment):
  buffer = list(range(0, num_frames, stride))
  while len(buffer) < clip_len:
    buffer.append(buffer[-1])
  step = max(1.0 * (len(buffer) - clip_len) / (num_segment - 1), 0)
  return [buffer[int(chunk * step):int(chunk * step) + clip_len] for chunk in range(num_segment)]


def _ssv2_reference(num_frames, num_segment, test_num_segment=2):
  tick = num_frames / float(num_segment)
  index = ([int(tick / 2.0 + tick * x) for x in range(num_segment)] +
           [int(tick * x) for x in range(num_segment)])
  while len(index) < num_segment * test_num_segment:
    index.append(index[-1])
  index = sorted(index)
  return [index[chunk::2] for chunk in range(test_num_segment)]


def _resize_sizes(h, w, size):  # VideoMAE's get_resize_sizes, (height, width)
  if w < h:
    return int(size * h / w), size
  return size, int(size * w / h)


def _resized_crop_starts(h, w, short_side, num_crop):
  """Where VideoMAE's test crops start in the resized frame, and along which axis."""
  new_h, new_w = _resize_sizes(h, w, short_side)
  step = 1.0 * (max(new_h, new_w) - short_side) / (num_crop - 1)
  return [int(split * step) for split in range(num_crop)], new_h >= new_w, (new_h, new_w)


@pytest.mark.parametrize("num_frames", [300, 123, 64, 61, 40, 10, 4, 1])
def test_kinetics_5_views_match_videomae(num_frames):
  got = views.temporal_views(num_frames, clip_len=16, stride=4, num_views=5, segments=False)
  want = _kinetics_reference(num_frames, 16, 4, 5)
  assert len(got) == 5
  for g, w in zip(got, want):
    assert g.dtype == np.int64 and g.shape == (16,)
    np.testing.assert_array_equal(g, w)
    assert g.min() >= 0 and g.max() < num_frames


def test_kinetics_cases_are_what_they_claim():
  exact = views.temporal_views(64, clip_len=16, stride=4, num_views=5, segments=False)
  for v in exact:  # exactly clip_len * stride frames: one window, five times
    np.testing.assert_array_equal(v, np.arange(16) * 4)
  short = views.temporal_views(40, clip_len=16, stride=4, num_views=5, segments=False)
  np.testing.assert_array_equal(short[0], [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] + [36] * 6)
  long = views.temporal_views(300, clip_len=16, stride=4, num_views=5, segments=False)
  # 75 grid entries, step (75 - 16) / 4 = 14.75: starts 0, 14, 29, 44, 59 grid entries.
  assert [int(v[0]) for v in long] == [0, 56, 116, 176, 236]
  assert long[-1][-1] == 296


@pytest.mark.parametrize("num_frames", [200, 48, 33, 16, 10, 3, 1])
def test_ssv2_2_views_match_videomae(num_frames):
  got = views.temporal_views(num_frames, clip_len=16, stride=1, num_views=2, segments=True)
  want = _ssv2_reference(num_frames, 16)
  assert len(got) == 2
  for g, w in zip(got, want):
    assert g.dtype == np.int64 and g.shape == (16,)
    np.testing.assert_array_equal(g, w)
  # View 0 = segment starts, view 1 = segment centres, as the repo's sampler names them.
  np.testing.assert_array_equal(got[0], sampling.sample_segment_indices(
      num_frames, 16, None, mode="start"))
  np.testing.assert_array_equal(got[1], sampling.sample_segment_indices(
      num_frames, 16, None, mode="center"))


def test_ssv2_fewer_frames_than_segments_spreads_in_order():
  got = views.temporal_views(5, clip_len=16, stride=1, num_views=2, segments=True)
  np.testing.assert_array_equal(got[0], np.floor(np.arange(16) * 5 / 16))
  assert set(got[1].tolist()) == set(range(5)) and np.all(np.diff(got[1]) >= 0)


def test_single_and_extra_view_definitions():
  one = views.temporal_views(100, clip_len=8, stride=1, num_views=1, segments=True)
  np.testing.assert_array_equal(one[0], sampling.sample_segment_indices(100, 8, None,
                                                                        mode="center"))
  four = views.temporal_views(100, clip_len=8, stride=1, num_views=4, segments=True)
  tick = 100 / 8
  for v, got in enumerate(four):  # v / 4 of the way into each segment
    np.testing.assert_array_equal(got, np.floor(tick * np.arange(8) + tick * v / 4))
  # Kinetics style, one view: the middle of the 3- and 5-view grids.
  for n in (300, 123, 40):
    single = views.temporal_views(n, clip_len=16, stride=4, num_views=1, segments=False)[0]
    for t in (3, 5):
      grid = views.temporal_views(n, clip_len=16, stride=4, num_views=t, segments=False)
      np.testing.assert_array_equal(single, grid[t // 2])


@pytest.mark.parametrize("hw", [(240, 320), (320, 240), (256, 256), (224, 398), (180, 320),
                                (331, 257)])
def test_spatial_boxes_match_videomae(hw):
  h, w = hw
  boxes = views.spatial_boxes(hw, crop_size=224, num_views=3)
  starts, along_height, (new_h, new_w) = _resized_crop_starts(h, w, 224, 3)
  assert len(boxes) == 3
  for box, start in zip(boxes, starts):
    # Map the resized crop (start .. start + 224 along the long side, all of the short side)
    # back to source pixels, axis by axis.
    sy, sx = h / new_h, w / new_w
    if along_height:
      want = (start * sy, 0.0, 224 * sy, w)
    else:
      want = (0.0, start * sx, h, 224 * sx)
    np.testing.assert_allclose(box, want, rtol=0, atol=1e-9)
    top, left, bh, bw = box
    assert top >= 0 and left >= 0 and top + bh <= h + 1e-9 and left + bw <= w + 1e-9
  long_axis = 0 if along_height else 1
  assert boxes[0][long_axis] == 0
  assert boxes[-1][long_axis] + boxes[-1][long_axis + 2] <= hw[long_axis] + 1e-9


def test_spatial_boxes_orientation_and_square():
  land = views.spatial_boxes((240, 320), crop_size=224, num_views=3)
  assert [b[0] for b in land] == [0.0] * 3 and [b[2] for b in land] == [240.0] * 3
  assert land[0][1] < land[1][1] < land[2][1]
  assert land[2][1] + land[2][3] == pytest.approx(320)  # the right crop ends at the edge
  port = views.spatial_boxes((320, 240), crop_size=224, num_views=3)
  assert [b[1] for b in port] == [0.0] * 3 and port[0][0] < port[1][0] < port[2][0]
  square = views.spatial_boxes((256, 256), crop_size=224, num_views=3)
  assert square[0] == square[1] == square[2] == (0.0, 0.0, 256.0, 256.0)
  # One crop = the middle of three.
  assert views.spatial_boxes((240, 320), crop_size=224, num_views=1) == [land[1]]
  # Short side already the crop size: VideoMAE does not resize; integer boxes.
  assert views.spatial_boxes((224, 398), crop_size=224, num_views=3) == [
      (0.0, 0.0, 224.0, 224.0), (0.0, 87.0, 224.0, 224.0), (0.0, 174.0, 224.0, 224.0)]


def _index_clip(indices, height, width):
  """Frames whose red channel is the frame index and green / blue the column / row."""
  indices = np.asarray(indices, np.int64)
  t = len(indices)
  frames = np.empty((t, height, width, 3), np.uint8)
  frames[..., 0] = (indices % 256)[:, None, None]
  frames[..., 1] = (np.arange(width) % 256)[None, None, :]
  frames[..., 2] = (np.arange(height) % 256)[None, :, None]
  grid = (-(-height // 8), -(-width // 8))
  clip = clip_lib.Clip(frames=frames, flow=None, magnitude=np.zeros((t, *grid), np.float32),
                       has_vectors=np.zeros(t, bool),
                       motion_source=clip_lib.MOTION_FROM_FRAME_DIFF, frame_indices=indices,
                       name="index_clip")
  clip.check()
  return clip


def test_make_views_picks_frames_and_crops_exactly():
  # Short side == crop size: no resize, so each crop is an exact slice (lefts 0, 8, 16).
  index_lists = views.temporal_views(40, clip_len=4, stride=3, num_views=3, segments=False)
  union = views.union_indices(index_lists)
  np.testing.assert_array_equal(union, np.unique(np.concatenate(index_lists)))
  clip = _index_clip(union, 32, 48)
  out = views.make_views(clip, index_lists, crop_size=32, num_spatial=3)
  assert out.shape == (9, 4, 32, 32, 3) and out.dtype == np.uint8
  plan = views.enumerate_views(index_lists, 3)
  assert [(v.temporal_index, v.spatial_index) for v in plan] == [
      (t, s) for t in range(3) for s in range(3)]
  for view, got in zip(plan, out):
    np.testing.assert_array_equal(view.frame_indices, index_lists[view.temporal_index])
    left = 8 * view.spatial_index
    pos = np.searchsorted(union, view.frame_indices)
    np.testing.assert_array_equal(got, clip.frames[pos, :, left:left + 32])
    np.testing.assert_array_equal(got[:, 0, 0, 0], view.frame_indices)


def test_make_views_resized_keeps_frame_identity_and_order():
  index_lists = views.temporal_views(50, clip_len=8, stride=1, num_views=2, segments=True)
  union = views.union_indices(index_lists)
  clip = _index_clip(union, 48, 72)  # short side 48 -> 32, long side 72 -> 48
  out = views.make_views(clip, index_lists, crop_size=32, num_spatial=3)
  assert out.shape == (6, 8, 32, 32, 3)
  for v in range(6):
    t, s = divmod(v, 3)
    # The red channel is constant per frame, so any resampling keeps it exactly.
    np.testing.assert_array_equal(out[v, :, :, :, 0],
                                  np.broadcast_to(index_lists[t][:, None, None], (8, 32, 32)))
  # Columns move right from crop to crop (green = source column), rows span the whole height.
  first_col = out[:3, 0, 16, 0, 1].astype(int)
  assert first_col[0] < first_col[1] < first_col[2]
  assert out[0, 0, 0, 0, 2] <= 1 and out[0, 0, -1, 0, 2] >= 46


def test_make_views_one_step_equals_resize_then_crop():
  # A smooth image: resizing with PIL first, then cutting integer pixels, agrees within rounding.
  h, w, crop = 60, 100, 32
  yy, xx = np.mgrid[0:h, 0:w]
  frame = np.stack([xx * 2.5, yy * 4.0, (xx + yy) * 1.5], -1).clip(0, 255).astype(np.uint8)
  clip = _index_clip([0], h, w)
  clip.frames[0] = frame
  out = views.make_views(clip, [np.array([0])], crop_size=crop, num_spatial=3)
  new_h, new_w = _resize_sizes(h, w, crop)
  resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR))
  starts, along_height, _ = _resized_crop_starts(h, w, crop, 3)
  assert not along_height and starts == [0, 10, 21]
  for s, start in enumerate(starts):
    two_step = resized[:, start:start + crop].astype(int)
    assert np.abs(out[s, 0].astype(int) - two_step).max() <= 1


def test_make_views_rejects_missing_frames_and_bad_sizes():
  clip = _index_clip([0, 2, 4], 32, 32)
  with pytest.raises(ValueError, match="lacks frames"):
    views.make_views(clip, [np.array([0, 3])], crop_size=32, num_spatial=1)
  with pytest.raises(ValueError, match="multiple of 8"):
    views.make_views(clip, [np.array([0, 2])], crop_size=30, num_spatial=1)
  with pytest.raises(ValueError, match="one 1-D length"):
    views.make_views(clip, [np.array([0, 2]), np.array([4])], crop_size=32, num_spatial=1)
  with pytest.raises(ValueError):
    views.temporal_views(0, clip_len=16, stride=4, num_views=5, segments=False)


def test_view_is_frozen_and_read_only():
  view = views.View(np.arange(4), 1, 2)
  assert view.frame_indices.dtype == np.int64
  with pytest.raises(ValueError):
    view.frame_indices[0] = 5
  with pytest.raises(AttributeError):
    view.temporal_index = 0


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_merge_scores_is_mean_softmax():
  logits = np.random.default_rng(0).normal(size=(15, 400)) * 5
  probs = views.merge_scores(logits)
  np.testing.assert_allclose(probs, np.mean([_softmax(row) for row in logits], axis=0),
                             rtol=1e-12)
  assert probs.shape == (400,) and probs.sum() == pytest.approx(1.0)
  batched = views.merge_scores(np.stack([logits, logits[::-1]]))
  np.testing.assert_allclose(batched, [probs, probs], rtol=1e-12)
  np.testing.assert_allclose(views.merge_scores([[1000.0, 0.0]]), [1.0, 0.0])  # stable


def test_merge_scores_differs_from_mean_logits():
  # One view is very sure of class 0; three views moderately prefer class 1.
  logits = np.array([[20.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
  assert np.argmax(logits.mean(axis=0)) == 0
  probs = views.merge_scores(logits)
  assert np.argmax(probs) == 1
  np.testing.assert_allclose(probs[1], 3 / 4 * _softmax(np.array([0.0, 2.0]))[1], atol=1e-8)
