"""The C kernel of `motion.vectors_to_flow` against its NumPy reference: the same bits.

`.ci/run` fails when the kernel was not built, so these tests do not skip there.
"""

from __future__ import annotations

import numpy as np
import pytest

from input_pipeline import decode
from input_pipeline import motion
from input_pipeline import sampling

kernel = pytest.importorskip("input_pipeline._flow_kernel",
                             reason="the C kernel was not built (no C compiler at install)")


def _both(monkeypatch, *args, **kwargs):
  """vectors_to_flow(*args, **kwargs) with the C kernel, then with the NumPy reference."""
  out = []
  for which in (kernel, None):
    monkeypatch.setattr(motion, "_flow_kernel", which)
    result = motion.vectors_to_flow(*args, **kwargs)
    out.append(result if isinstance(result, tuple) else (result,))
  return out


def _assert_same_bits(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()  # (also tells -0.0 from 0.0)


def _random_frames(rng, height, width):
  """One clip's worth of hand-made vectors: every block size, misaligned and off-grid blocks,
  both reference lists, mixed scales, static blocks and frames without vectors."""
  sizes = np.array([[16, 16], [16, 8], [8, 16], [8, 8], [4, 4], [8, 4], [4, 8], [32, 16],
                    [24, 24], [12, 20], [0, 8]])
  static_share = float(rng.choice([0.0, 0.3, 0.9, 1.0]))
  frames = []
  for _ in range(int(rng.integers(1, 9))):
    if rng.random() < 0.15:
      frames.append(None)
      continue
    n = int(rng.integers(0, 120))
    v = np.zeros(n, motion.MOTION_VECTOR_DTYPE)
    size = sizes[rng.choice(len(sizes), n, p=[.45, .1, .1, .1, .06, .04, .04, .03, .03, .03,
                                              .02])]
    v["w"], v["h"] = size[:, 0], size[:, 1]
    aligned = rng.random(n) < 0.7
    v["dst_x"] = np.where(aligned, rng.integers(0, width // 16 + 1, n) * 16 + 8,
                          rng.integers(-40, width + 40, n))
    v["dst_y"] = np.where(aligned, rng.integers(0, height // 16 + 1, n) * 16 + 8,
                          rng.integers(-40, height + 40, n))
    v["source"] = rng.choice([-1, 1], n, p=[.6, .4]) if rng.random() < .4 else -1
    static = rng.random(n) < static_share
    v["motion_x"] = np.where(static, 0, rng.integers(-300, 300, n))
    v["motion_y"] = np.where(static, 0, rng.integers(-300, 300, n))
    v["motion_scale"] = rng.choice([4, 2]) if rng.random() < .8 else rng.choice([0, 1, 2, 4], n)
    frames.append(v)
  return frames


def test_random_vectors_give_the_same_bits(monkeypatch):
  rng = np.random.default_rng(0)
  for _ in range(300):
    height = int(rng.choice([8, 32, 72, 120, 136]))
    width = int(rng.choice([8, 40, 88, 160, 200]))
    frames = _random_frames(rng, height, width)
    num_out = int(rng.integers(1, 6))
    weights = rng.random((num_out, len(frames))) * (rng.random((num_out, len(frames))) < 0.6)
    kwargs = {}
    if rng.random() < 0.3:
      kwargs["past_distance"] = rng.integers(1, 4, len(frames)).astype(float)
    if rng.random() < 0.2:
      kwargs["future_distance"] = rng.integers(1, 4, len(frames)).astype(float)
    kwargs["with_coverage"] = bool(rng.random() < 0.3)
    _assert_same_bits(*_both(monkeypatch, frames, weights, height, width, **kwargs))


def test_fill_rule_rounds_give_the_same_bits(monkeypatch):
  # Frames without vectors take their neighbours' motion: one frame feeds several outputs, i.e.
  # several rounds of the scatter.
  rng = np.random.default_rng(1)
  frames = _random_frames(rng, 64, 96)
  while len(frames) < 6:
    frames = _random_frames(rng, 64, 96)
  frames[1] = frames[3] = None
  ids = np.arange(len(frames))
  has = np.array([f is not None and f.size > 0 for f in frames])
  weights, _ = motion.interval_weights(ids, ids, has)
  assert (np.count_nonzero(weights, axis=0) > 1).any()  # a frame used twice: two rounds
  _assert_same_bits(*_both(monkeypatch, frames, weights, 64, 96))


@pytest.mark.parametrize("fixture", ["h264_video", "bframes_video", "pan_objects_video",
                                     "mpeg4_video"])
def test_decoded_clips_give_the_same_bits(fixture, request, monkeypatch):
  video = request.getfixturevalue(fixture)
  rng = np.random.default_rng(2)
  num_frames = decode.probe(video.path).num_frames
  for stride in (4, 2):
    indices = sampling.sample_frame_indices(num_frames, 8, stride, rng)
    clips = []
    for which in (kernel, None):
      monkeypatch.setattr(motion, "_flow_kernel", which)
      clip = decode.decode_clip(video.path, indices, motion="mv", compensate_camera=True,
                                flow_indices=indices)
      clips.append((clip.flow, clip.magnitude, clip.frame_flow))
    assert np.abs(clips[0][0]).max() > 0  # the clips move
    _assert_same_bits(*clips)


def test_full_size_b_frame_clip_gives_the_same_bits(monkeypatch):
  # 64 frames of 320x240, H.264-like: macroblocks of both lists, some split into 16x8 and 8x8
  # partitions with (0, 0) placeholders of the unused list, reference distances of a B-pyramid.
  rng = np.random.default_rng(3)
  ys, xs = np.mgrid[8:240:16, 8:320:16]
  frames = []
  for f in range(64):
    n = xs.size
    mb = np.zeros(2 * n, motion.MOTION_VECTOR_DTYPE)
    mb["w"] = mb["h"] = 16
    mb["dst_x"], mb["dst_y"] = np.tile(xs.ravel(), 2), np.tile(ys.ravel(), 2)
    mb["source"] = np.repeat([-1, 1], n) if f % 2 else -1
    mb["motion_x"], mb["motion_y"] = rng.integers(-16, 17, (2, 2 * n))
    mb["motion_scale"] = 4
    # 40 macroblocks split into two 8x16 halves, a vector from each list for each half.
    part = np.zeros(160, motion.MOTION_VECTOR_DTYPE)
    part["w"], part["h"] = 8, 16
    part["dst_x"] = np.tile(xs.ravel()[:40], 4) + np.repeat([-4, 4, -4, 4], 40)
    part["dst_y"] = np.tile(ys.ravel()[:40], 4)
    part["source"] = np.repeat([-1, 1], 80) if f % 2 else -1
    part["motion_x"] = np.where(rng.random(160) < 0.5, 0, rng.integers(-16, 17, 160))
    part["motion_scale"] = 4
    frames.append(None if f % 16 == 0 else np.concatenate([mb, part]))
  weights, _ = motion.interval_weights(np.arange(64), np.arange(3, 64, 4),
                                       np.array([v is not None for v in frames]))
  distances = {"past_distance": rng.integers(1, 4, 64).astype(float),
               "future_distance": rng.integers(1, 3, 64).astype(float)}
  out = _both(monkeypatch, frames, weights, 240, 320, **distances)
  assert np.abs(out[0][0]).max() > 0
  _assert_same_bits(*out)


def test_reference_distances_must_match_the_frames():
  frames = [np.zeros(1, motion.MOTION_VECTOR_DTYPE)] * 3
  with pytest.raises(ValueError, match=r"past_distance has shape \(2,\), expected \(3,\)"):
    motion.vectors_to_flow(frames, np.ones((1, 3)), 16, 16, past_distance=np.ones(2))


def _arguments(n=3, frames=2, rounds=1, gh=2, gw=2, num_out=1):
  vectors = np.zeros(n, motion.MOTION_VECTOR_DTYPE)
  vectors["w"] = vectors["h"] = 16
  vectors["dst_x"] = vectors["dst_y"] = 8
  vectors["motion_x"] = 4
  return [motion._rows(vectors), np.zeros(n, np.int64), np.ones(frames), np.ones(frames),
          np.zeros((rounds, frames), np.int64), np.ones((rounds, frames)), rounds, frames, gh, gw,
          num_out, np.zeros((num_out, gh, gw, 2))]


def test_kernel_sums_a_macroblock():
  args = _arguments()
  kernel.scatter(*args)
  np.testing.assert_array_equal(args[-1][0, :, :, 0], np.full((2, 2), -12.0))
  np.testing.assert_array_equal(args[-1][0, :, :, 1], np.zeros((2, 2)))


@pytest.mark.parametrize("position, value, message", [
    (0, np.zeros(39, np.uint8), "40-byte records"),
    (1, np.zeros(2, np.int64), "slot has"),
    (2, np.ones(3), "past has"),
    (3, np.ones(1), "future has"),
    (4, np.zeros((1, 3), np.int64), "out_of has"),
    (5, np.ones((2, 2)), "w_of has"),
    (11, np.zeros((1, 2, 2, 1)), "field has"),
])
def test_kernel_rejects_wrong_sizes(position, value, message):
  args = _arguments()
  args[position] = value
  with pytest.raises(ValueError, match=message):
    kernel.scatter(*args)


@pytest.mark.parametrize("position, value", [(1, np.array([0, 2, 0])),
                                             (4, np.array([[0, 1]]))])
def test_kernel_rejects_indices_out_of_range(position, value):
  args = _arguments()
  args[position] = value.astype(np.int64)
  with pytest.raises(ValueError, match="out of range"):
    kernel.scatter(*args)


@pytest.mark.parametrize("position, value", [(6, -1), (7, 1 << 21), (8, 40000), (10, 1 << 21)])
def test_kernel_rejects_sizes_out_of_range(position, value):
  args = _arguments()
  args[position] = value
  with pytest.raises(ValueError, match="negative or too large"):
    kernel.scatter(*args)


def test_kernel_needs_a_writable_field():
  args = _arguments()
  args[-1].flags.writeable = False
  with pytest.raises(TypeError):
    kernel.scatter(*args)
