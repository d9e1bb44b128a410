"""Tests of input_pipeline.motion on hand-built motion vectors, fields and luma planes."""

from __future__ import annotations


import numpy as np
import pytest

from input_pipeline import motion


def _vectors(*blocks) -> np.ndarray:
  """Motion vectors from (dst_x, dst_y, w, h, source, motion_x, motion_y[, scale]) tuples."""
  out = np.zeros(len(blocks), motion.MOTION_VECTOR_DTYPE)
  for i, b in enumerate(blocks):
    dst_x, dst_y, w, h, source, mx, my = b[:7]
    scale = b[7] if len(b) > 7 else 4
    out[i] = (source, w, h, dst_x + mx / scale, dst_y + my / scale, dst_x, dst_y, 0, mx, my,
              scale)
  return out


def test_grid_shape_rounds_up():
  assert motion.grid_shape(240, 320) == (30, 40)
  assert motion.grid_shape(241, 17) == (31, 3)


class TestFrameFlow:

  def test_past_reference_block_moving_right(self):
    # 16x16 block centred at (24, 8): cells x 2..3, y 0..1. Came from 2 px to the left.
    vec = _vectors((24, 8, 16, 16, -1, -8, 0))
    flow = motion.frame_flow(vec, 32, 48)
    assert flow.shape == (4, 6, 2) and flow.dtype == np.float32
    expected = np.zeros((4, 6, 2), np.float32)
    expected[0:2, 2:4] = (2.0, 0.0)
    np.testing.assert_array_equal(flow, expected)

  def test_future_reference_sign(self):
    # The block will be 1.5 px further down in the next frame: velocity +1.5 (down).
    vec = _vectors((8, 8, 16, 16, 1, 0, 6))
    flow = motion.frame_flow(vec, 16, 16)
    np.testing.assert_allclose(flow[..., 1], 1.5)
    np.testing.assert_allclose(flow[..., 0], 0.0)

  @pytest.mark.parametrize("w,h,cells", [(8, 8, [(1, 1)]), (16, 8, [(1, 0), (1, 1)]),
                                         (8, 16, [(0, 1), (1, 1)])])
  def test_partition_sizes(self, w, h, cells):
    # Block with its top-left corner at pixel (x, y) = (0 or 8, 8 or 0) covering `cells` (row, col).
    x0 = 0 if w == 16 else 8
    y0 = 0 if h == 16 else 8
    vec = _vectors((x0 + w // 2, y0 + h // 2, w, h, -1, 4, -4))
    flow = motion.frame_flow(vec, 24, 24)
    covered = np.zeros((3, 3), bool)
    for r, c in cells:
      covered[r, c] = True
    np.testing.assert_array_equal(flow[covered], [[-1.0, 1.0]] * len(cells))
    np.testing.assert_array_equal(flow[~covered], 0.0)

  def test_blocks_partly_outside_are_clipped(self):
    # 20x12 frame -> 2x3 grid. A 16x16 block at pixels [16, 32) x [0, 16) covers cells x 2..3 and
    # y 0..1 of which only (0..1, 2) exist; a block entirely outside is ignored.
    vec = _vectors((24, 8, 16, 16, -1, -4, 0), (56, 40, 16, 16, -1, -40, 0))
    flow = motion.frame_flow(vec, 12, 20)
    assert flow.shape == (2, 3, 2)
    np.testing.assert_array_equal(flow[:, 2, 0], [1.0, 1.0])
    np.testing.assert_array_equal(flow[:, :2], 0.0)

  def test_bi_prediction_is_averaged_not_summed(self):
    # The same block predicted from 1 frame back (moved +2) and 1 frame ahead (moves on +2).
    vec = _vectors((8, 8, 16, 16, -1, -8, 0), (8, 8, 16, 16, 1, 8, 0))
    np.testing.assert_allclose(motion.frame_flow(vec, 16, 16)[..., 0], 2.0)

  def test_b_frame_placeholders_of_an_unused_list_do_not_count(self):
    """FFmpeg exports both lists for every partition of a macroblock that uses both.

    A partition predicting from one list gets a (0, 0) entry for the other: it must not halve
    that partition's motion. Genuine zeros stay: static blocks, the zero vector of a 16x16
    bi-predicted macroblock (its lists are exact) and partitions of one-list macroblocks.
    """
    vec = _vectors(
        # Macroblock 0 (x 0..16), 16x8: top from the past only, plus its list-1 placeholder;
        # bottom bi-predicted. Both move +2 px/frame.
        (8, 4, 16, 8, -1, -8, 0), (8, 12, 16, 8, -1, -8, 0),
        (8, 4, 16, 8, 1, 0, 0), (8, 12, 16, 8, 1, 8, 0),
        # Macroblock 1 (x 16..32), 8x8, bi-predicted and static.
        *[(16 + cx, cy, 8, 8, s, 0, 0) for s in (-1, 1) for cx in (4, 12) for cy in (4, 12)],
        # Macroblock 2 (x 32..48), 16x16 bi-predicted: still (0) and moving on (+2): mean 1.
        (40, 8, 16, 16, -1, 0, 0), (40, 8, 16, 16, 1, 8, 0),
        # Macroblock 3 (x 48..64), 8x8 from the past only: top-left moves +2, the rest is still.
        (52, 4, 8, 8, -1, -8, 0), (60, 4, 8, 8, -1, 0, 0), (52, 12, 8, 8, -1, 0, 0),
        (60, 12, 8, 8, -1, 0, 0))
    flow = motion.frame_flow(vec, 16, 64)
    expected = np.zeros((2, 8), np.float32)
    expected[:, 0:2] = 2.0
    expected[:, 4:6] = 1.0
    expected[0, 6] = 2.0
    np.testing.assert_array_equal(flow[..., 0], expected)
    assert not flow[..., 1].any()

  def test_reference_distance_divides(self):
    vec = _vectors((8, 8, 16, 16, -1, -16, 0), (24, 8, 16, 16, 1, 12, 0))
    flow = motion.frame_flow(vec, 16, 32, past_distance=2.0, future_distance=3.0)
    np.testing.assert_allclose(flow[:, :2, 0], 2.0)
    np.testing.assert_allclose(flow[:, 2:, 0], 1.0)

  def test_none_and_empty_give_zeros(self):
    assert not motion.frame_flow(None, 16, 16).any()
    assert not motion.frame_flow(_vectors(), 16, 16).any()


def test_frame_vectors_container():
  frames = [None, _vectors((8, 8, 16, 16, -1, 4, 0)),
            _vectors((8, 8, 16, 16, -1, 8, 0), (24, 8, 16, 16, -1, 12, 0))]
  vectors = motion.FrameVectors.from_frames(frames)
  np.testing.assert_array_equal(vectors.counts, [0, 1, 2])
  np.testing.assert_array_equal(vectors.has_vectors, [False, True, True])
  np.testing.assert_array_equal(vectors.vectors["motion_x"], [4, 8, 12])
  dropped = vectors.without(np.array([False, True, False]))
  np.testing.assert_array_equal(dropped.counts, [0, 0, 2])
  np.testing.assert_array_equal(dropped.vectors["motion_x"], [8, 12])
  weights = np.eye(3)
  np.testing.assert_array_equal(motion.vectors_to_flow(vectors, weights, 16, 32),
                                motion.vectors_to_flow(frames, weights, 16, 32))


class TestIntervals:

  def test_accumulation_sums_every_frame_of_the_interval(self):
    # Per-frame motion f at frame f: the interval (3, 7] has mean (4+5+6+7)/4, not just 7.
    per_frame = np.arange(12, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    weights, has = motion.interval_weights(np.arange(12), np.array([3, 7, 11]))
    out = motion.accumulate(per_frame, weights)
    np.testing.assert_allclose(out[:, 0, 0], [1.5, 5.5, 9.5])  # first: (0+1+2+3)/4
    assert has.all()

  def test_vectors_accumulate_like_fields(self):
    # A block moving 1, 2, 3, 4 px/frame in frames 1..4: stride-4 flow is the mean, 2.5.
    frames = [None] + [_vectors((8, 8, 16, 16, -1, -4 * v, 0)) for v in (1, 2, 3, 4)]
    weights, has = motion.interval_weights(np.arange(5), np.array([0, 4]), [False] + [True] * 4)
    flow = motion.vectors_to_flow(frames, weights, 16, 16)
    np.testing.assert_allclose(flow[1, ..., 0], 2.5)
    # The first sampled frame (0, an I-frame) reaches back before frame 0: only frame 0 exists,
    # it has no vectors and is filled from the next frame with vectors (frame 1).
    np.testing.assert_allclose(flow[0, ..., 0], 1.0)
    np.testing.assert_array_equal(has, [False, True])

  def test_first_interval_uses_the_next_gap_and_clips_at_frame_zero(self):
    weights, _ = motion.interval_weights(np.arange(0, 10), np.array([1, 5, 9]))
    np.testing.assert_allclose(weights[0, :2], [0.5, 0.5])  # (1 - 4, 1] clipped to [0, 1]
    assert not weights[0, 2:].any()
    weights, _ = motion.interval_weights(np.arange(4, 12), np.array([7, 11]))
    np.testing.assert_allclose(weights[0], [0.25] * 4 + [0] * 4)  # frames 4..7

  def test_single_frame_clip_uses_gap_one(self):
    weights, _ = motion.interval_weights(np.arange(5, 6), np.array([5]))
    np.testing.assert_array_equal(weights, [[1.0]])

  def test_explicit_first_gap(self):
    weights, _ = motion.interval_weights(np.arange(0, 8), np.array([7]), first_gap=4)
    np.testing.assert_allclose(weights[0], [0] * 4 + [0.25] * 4)

  def test_fill_uses_mean_of_nearest_frames_with_motion(self):
    per_frame = np.array([10, 20, 0, 0, 50, 60], np.float32)[:, None]
    valid = np.array([True, True, False, False, True, True])
    weights, has = motion.interval_weights(np.arange(6), np.arange(6), valid)
    np.testing.assert_allclose(motion.accumulate(per_frame, weights)[:, 0],
                               [10, 20, 35, 35, 50, 60])
    np.testing.assert_array_equal(has, valid)  # a filled frame alone has no real vectors

  def test_fill_at_the_window_edges_is_one_sided(self):
    per_frame = np.array([0, 7, 9, 0], np.float32)[:, None]
    valid = np.array([False, True, True, False])
    weights, _ = motion.interval_weights(np.arange(4), np.arange(4), valid)
    np.testing.assert_allclose(motion.accumulate(per_frame, weights)[:, 0], [7, 7, 9, 9])

  def test_no_motion_anywhere_gives_zeros_flagged(self):
    weights, has = motion.interval_weights(np.arange(8), np.array([3, 7]), np.zeros(8, bool))
    assert not weights.any() and not has.any()

  def test_vectors_to_flow_with_fill_matches_per_frame_fields(self):
    rng = np.random.default_rng(1)
    frames = [None if f % 5 == 0 else _vectors(
        *[(x, 8, 16, 16, -1, *rng.integers(-20, 21, 2)) for x in (8, 24)]) for f in range(12)]
    valid = np.array([f is not None for f in frames])
    per_frame = np.stack([motion.frame_flow(v, 16, 32) for v in frames])
    weights, _ = motion.interval_weights(np.arange(12), np.array([2, 5, 8, 11]), valid)
    np.testing.assert_allclose(motion.vectors_to_flow(frames, weights, 16, 32),
                               motion.accumulate(per_frame, weights), atol=1e-5)

  def test_rejects_a_sampled_frame_outside_the_window(self):
    with pytest.raises(ValueError):
      motion.interval_weights(np.arange(4, 8), np.array([2, 6]))


class TestLumaDifference:

  def test_mean_absolute_difference_per_cell(self):
    prev = np.zeros((16, 16), np.uint8)
    cur = prev.copy()
    cur[:8, :8] = 200
    cur[8:, 8:12] = 10  # half of the cell's pixels differ by 10
    out = motion.luma_absdiff_cells(prev, cur)
    np.testing.assert_allclose(out, [[200, 0], [0, 5]])
    np.testing.assert_allclose(motion.luma_absdiff_cells(cur, prev), out)  # symmetric, no wrap

  def test_partial_cells_average_over_their_pixels(self):
    prev = np.zeros((10, 12), np.uint8)
    cur = np.full((10, 12), 30, np.uint8)
    out = motion.luma_absdiff_cells(prev, cur)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, 30)


class TestMagnitude:

  def test_length(self):
    flow = np.array([[[[3.0, 4.0], [0.0, -2.0]]]], np.float32)
    np.testing.assert_allclose(motion.magnitude(flow), [[[5.0, 2.0]]])

  def test_camera_compensation_removes_a_pure_pan(self):
    flow = np.broadcast_to(np.array([3.0, -1.0], np.float32), (2, 5, 6, 2)).copy()
    assert np.allclose(motion.magnitude(flow), np.sqrt(10.0))
    np.testing.assert_allclose(motion.magnitude(flow, compensate_camera=True), 0.0)

  def test_camera_compensation_keeps_a_moving_object(self):
    flow = np.broadcast_to(np.array([3.0, 0.0], np.float32), (1, 6, 6, 2)).copy()
    flow[0, 1:3, 1:3] = (3.0, 4.0)  # object moving down on the panning background
    mag = motion.magnitude(flow, compensate_camera=True)
    np.testing.assert_allclose(mag[0, 1:3, 1:3], 4.0)
    assert mag[0].sum() == pytest.approx(16.0)


def test_to_token_slots_means_over_the_tubelet():
  mag = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)
  slots = motion.to_token_slots(mag, 2)
  assert slots.shape == (2, 3, 4)
  np.testing.assert_allclose(slots[:, 0, 0], [0.5, 2.5])  # frame 4 (incomplete tubelet) dropped
