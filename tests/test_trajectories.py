"""Trajectories from codec motion: by construction on flow fields, against the true path of
an encoded object, and through the input pipeline (frames in between, vector-less videos)."""

import numpy as np
import pytest

from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import pipeline
from input_pipeline import synthetic
from input_pipeline import trajectories
from input_pipeline import transforms


def _constant(slots, steps, gh, gw, dx, dy):
  flow = np.zeros((slots, steps, gh, gw, 2))
  flow[..., 0], flow[..., 1] = dx, dy
  return flow


def test_constant_flow_moves_every_point_by_it():
  flow = _constant(2, 3, 4, 4, 1.5, -0.5)
  target = trajectories.token_trajectories(flow, np.ones((2, 3), bool), height=32, width=32,
                                           patch=16, points=2)
  assert target.shape == (2 * 4, 3 * (1 + 4) * 2)
  parts = target.reshape(8, 3, 5, 2)
  np.testing.assert_allclose(parts[:, :, 0], np.broadcast_to([1.5, -0.5], (8, 3, 2)))
  np.testing.assert_allclose(parts[:, :, 1:], 0.0, atol=1e-6)  # a translation: no deformation


def test_shape_change_of_an_expanding_field():
  """flow = 0.1 x (position - centre): points move apart; the shape part says so."""
  gh = gw = 4
  centres = np.arange(gw) * 8 + 4.0
  flow = np.zeros((1, 1, gh, gw, 2))
  flow[..., 0] = 0.1 * (centres[None, :] - 16)
  flow[..., 1] = 0.1 * (centres[:, None] - 16)
  x, y = trajectories.start_points(32, 32, 16, 2)
  moves = trajectories.track(flow, np.ones((1, 1), bool), x, y)[0, 0]
  # u(x) = 0.1 (x - 16) is linear, so x_1 = x_0 + u(x_1) gives u = 0.1 (x_0 - 16) / 0.9 where
  # the bilinear field is exact (inside the cell centres).
  inside = (x > 4) & (x < 28) & (y > 4) & (y < 28)
  np.testing.assert_allclose(moves[inside, 0], 0.1 * (x[inside] - 16) / 0.9, atol=1e-3)
  parts = trajectories.token_trajectories(flow, np.ones((1, 1), bool), height=32, width=32,
                                          patch=16, points=2).reshape(4, 1, 5, 2)
  top_left = parts[0, 0, 1:]  # the points of patch (0, 0) relative to their mean
  assert top_left[0, 0] < 0 < top_left[1, 0] and top_left[0, 1] < 0 < top_left[2, 1]


def test_steps_without_vectors_take_the_nearest_valid_step():
  flow = np.stack([_constant(1, 1, 2, 2, d, 0)[0, 0] for d in (1.0, 5.0, 2.0, 7.0)])[None]
  valid = np.array([[True, False, True, False]])
  x, y = np.array([8.0]), np.array([8.0])
  moves = trajectories.track(flow, valid, x, y)[0, :, 0, 0]
  np.testing.assert_allclose(moves, [1.0, 1.0, 2.0, 2.0])  # ties go to the earlier step
  none = trajectories.track(flow, np.zeros((1, 4), bool), x, y)
  assert not none.any()


@pytest.fixture(scope="module")
def moving_square(tmp_path_factory):
  """One big textured object at constant velocity, clean encode (bf=0, ref=1, one GOP)."""
  path = tmp_path_factory.mktemp("traj") / "square.mp4"
  return synthetic.make_video(path, num_frames=24, height=128, width=160, num_objects=1,
                              object_size=(72, 72), max_speed=4.0, seed=3, bounce=False,
                              encoder_options={"bf": "0", "x264-params": "ref=1", "g": "100"})


@pytest.mark.parametrize("gop", [None, 4])
def test_trajectories_follow_the_true_path_within_1px(moving_square, tmp_path, gop):
  video = moving_square
  if gop is not None:  # I-frames inside the windows: their steps are filled
    video = synthetic.make_video(tmp_path / "gop.mp4", num_frames=24, height=128, width=160,
                                 num_objects=1, object_size=(72, 72), max_speed=4.0, seed=3,
                                 bounce=False, encoder_options={"bf": "0", "g": str(gop),
                                                                "x264-params": "ref=1"})
  stride, tubelet = 2, 2
  steps = stride * tubelet
  indices = np.arange(0, 16, stride)
  flow_at = trajectories.flow_frames(indices, tubelet, steps)
  clip = decode.decode_clip(video.path, indices, motion="mv", flow_indices=flow_at)
  assert clip.frame_flow.shape[0] == flow_at.size == 4 * steps
  slots = indices.size // tubelet
  flow = clip.frame_flow.reshape(slots, steps, *clip.frame_flow.shape[1:])
  valid = clip.frame_flow_valid.reshape(slots, steps)
  boxes = video.boxes[:, 0]  # [F, 4] x0, y0, x1, y1
  for k, start in enumerate(indices[::tubelet]):
    x0, y0, x1, y1 = boxes[start]
    # Points well inside the object (at least one motion cell from its edges).
    gx, gy = np.meshgrid(np.arange(x0 + 12, x1 - 12, 6.0), np.arange(y0 + 12, y1 - 12, 6.0))
    moves = trajectories.track(flow[k:k + 1], valid[k:k + 1], gx.reshape(-1), gy.reshape(-1))[0]
    true = np.diff(boxes[start:start + steps + 1, :2], axis=0)  # [steps, 2] px per frame
    error = np.abs(moves - true[:, None, :])
    assert error.max() <= 1.0, (k, error.max(), true)
    if gop is None:  # every step has its own vectors: a frame off would show as 1 px here
      assert error.max() <= 0.25, (k, error.max(), true)
    path_error = np.abs(np.cumsum(moves, axis=0) - np.cumsum(true, axis=0)[:, None])
    assert path_error.max() <= 1.0 * steps


def _spec(**kw):
  return pipeline.ClipSpec(num_frames=4, stride=3, size=64, train=False, mask_strategy="tube",
                           mask_ratio=0.5, **kw)


def test_pipeline_between_frames_are_the_decoded_frames_cropped_alike(moving_square):
  spec = _spec(between_frames=True, trajectory_points=2)
  out = pipeline.LoadClip(spec).random_map({"path": str(moving_square.path), "label": 0},
                                           np.random.default_rng(0))
  assert "failed" not in out, out
  t = spec.token_grid[0]
  assert out["between"].shape == (1, t, 2, 64, 64, 3)
  assert out["trajectory"].shape == (1, t * 4 * 4, spec.steps_tracked * 5 * 2)
  assert out["trajectory_valid"].tolist() == [1.0]
  # The centre window of a 24-frame video: indices 7, 10, 13, 16 -> between 8, 9 and 14, 15.
  indices = np.array([7, 10, 13, 16])
  between = spec.between_indices(indices)
  assert between.tolist() == [8, 9, 14, 15]
  frames = decode.decode_frames(moving_square.path, between)
  want = transforms.center_crop(clip_lib.without_motion(frames, between), 64, resize_short=64)
  np.testing.assert_array_equal(out["between"][0].reshape(-1, 64, 64, 3), want.frames)
  np.testing.assert_array_equal(out["frames"][0], transforms.center_crop(
      clip_lib.without_motion(decode.decode_frames(moving_square.path, indices), indices), 64,
      resize_short=64).frames)


def test_vectorless_video_is_not_scored_and_does_not_fail(tmp_path):
  video = synthetic.make_video(tmp_path / "intra.mp4", num_frames=16, height=64, width=80,
                               num_objects=1, codec="h264_intra")
  spec = _spec(trajectory_points=2)
  out = pipeline.LoadClip(spec).random_map({"path": str(video.path), "label": 0},
                                           np.random.default_rng(0))
  assert "failed" not in out, out
  assert out["trajectory_valid"].tolist() == [0.0] and not out["trajectory"].any()


def test_without_targets_the_clip_carries_nothing_extra(moving_square):
  out = pipeline.LoadClip(_spec()).random_map({"path": str(moving_square.path), "label": 0},
                                              np.random.default_rng(0))
  assert set(out) == {"frames", "label", "mask"}


def test_the_clip_motion_does_not_depend_on_the_flow_frames(tmp_path):
  """Decoding on past the last sampled frame for trajectories leaves the mask's motion as it
  was (the fill rule for frames without vectors must not look past the clip)."""
  video = synthetic.make_video(tmp_path / "gop.mp4", num_frames=32, height=64, width=80,
                               num_objects=2, seed=1,
                               encoder_options={"bf": "0", "g": "7", "x264-params": "ref=1"})
  indices = np.arange(4, 16, 2)  # frame 14 is an I-frame (g=7): its interval is filled
  plain = decode.decode_clip(video.path, indices, motion="mv")
  with_flow = decode.decode_clip(video.path, indices, motion="mv",
                                 flow_indices=trajectories.flow_frames(indices, 2, 8))
  np.testing.assert_array_equal(plain.magnitude, with_flow.magnitude)
  np.testing.assert_array_equal(plain.flow, with_flow.flow)
