"""Tests for input_pipeline/sampling.py: frame windows and TSN segments."""

from __future__ import annotations

import numpy as np
import pytest

from input_pipeline import sampling


def test_random_window_is_strided_and_in_range():
  starts = set()
  for seed in range(200):
    idx = sampling.sample_frame_indices(100, 16, 4, np.random.default_rng(seed))
    assert idx.dtype == np.int64 and idx.shape == (16,)
    np.testing.assert_array_equal(np.diff(idx), 4)
    assert idx[0] >= 0 and idx[-1] <= 99
    starts.add(int(idx[0]))
  assert min(starts) == 0 and max(starts) == 100 - 61  # every start, both ends included
  assert len(starts) > 30


def test_window_is_deterministic_by_seed():
  a = sampling.sample_frame_indices(300, 16, 2, np.random.default_rng(3))
  b = sampling.sample_frame_indices(300, 16, 2, np.random.default_rng(3))
  np.testing.assert_array_equal(a, b)


def test_center_window():
  idx = sampling.sample_frame_indices(100, 16, 4, None, mode="center")  # span 61, slack 39
  np.testing.assert_array_equal(idx, 19 + 4 * np.arange(16))
  exact = sampling.sample_frame_indices(61, 16, 4, None, mode="center")
  np.testing.assert_array_equal(exact, 4 * np.arange(16))


@pytest.mark.parametrize("mode", ["random", "center"])
def test_short_video_repeats_the_last_frame(mode):
  idx = sampling.sample_frame_indices(10, 8, 4, np.random.default_rng(0), mode=mode)
  np.testing.assert_array_equal(idx, [0, 4, 8, 9, 9, 9, 9, 9])
  one = sampling.sample_frame_indices(1, 4, 2, np.random.default_rng(0), mode=mode)
  np.testing.assert_array_equal(one, [0, 0, 0, 0])


@pytest.mark.parametrize("fn", [
    lambda n, rng: sampling.sample_frame_indices(n, 16, 4, rng),
    lambda n, rng: sampling.sample_segment_indices(n, 16, rng),
])
@pytest.mark.parametrize("num_frames", [0, -3])
def test_no_frames_raises_naming_the_field(fn, num_frames):
  with pytest.raises(ValueError, match="num_frames"):
    fn(num_frames, np.random.default_rng(0))


def test_bad_arguments_raise():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="stride"):
    sampling.sample_frame_indices(100, 16, 0, rng)
  with pytest.raises(ValueError, match="num_samples"):
    sampling.sample_frame_indices(100, 0, 4, rng)
  with pytest.raises(ValueError, match="mode"):
    sampling.sample_frame_indices(100, 16, 4, rng, mode="uniform")
  with pytest.raises(ValueError, match="rng"):
    sampling.sample_frame_indices(100, 16, 4, None)
  with pytest.raises(ValueError, match="mode"):
    sampling.sample_segment_indices(100, 16, rng, mode="middle")


def test_random_segments_follow_videomae():
  # 100 frames, 16 segments of 100 // 16 = 6 frames: one frame in each [6k, 6k + 6).
  offsets = set()
  for seed in range(100):
    idx = sampling.sample_segment_indices(100, 16, np.random.default_rng(seed))
    assert idx.dtype == np.int64 and idx.shape == (16,)
    k = idx // 6
    np.testing.assert_array_equal(k, np.arange(16))
    offsets.update((idx % 6).tolist())
  assert offsets == set(range(6))
  a = sampling.sample_segment_indices(100, 16, np.random.default_rng(5))
  b = sampling.sample_segment_indices(100, 16, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_frames", [100, 16, 37, 5])
def test_test_segments_follow_videomae(num_frames):
  tick = num_frames / 16
  centre = [int(tick / 2.0 + tick * x) for x in range(16)]  # VideoMAE's ssv2 test sampler
  start = [int(tick * x) for x in range(16)]
  np.testing.assert_array_equal(
      sampling.sample_segment_indices(num_frames, 16, None, mode="center"), centre)
  np.testing.assert_array_equal(
      sampling.sample_segment_indices(num_frames, 16, None, mode="start"), start)


def test_short_video_random_segments_spread_in_order():
  for seed in range(50):
    idx = sampling.sample_segment_indices(5, 16, np.random.default_rng(seed))
    assert np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() <= 4
    # Segment k covers [5k / 16, 5(k + 1) / 16): the frame drawn lies in it.
    assert np.all(idx >= np.floor(np.arange(16) * 5 / 16))
    assert np.all(idx <= np.floor((np.arange(16) + 1) * 5 / 16 - 1e-9))
  assert sampling.sample_segment_indices(16, 16, np.random.default_rng(0)).tolist() == list(
      range(16))
