"""Tests of input_pipeline.synthetic: real encoded files with the promised ground truth."""

from __future__ import annotations


import av
import numpy as np
import pytest

from input_pipeline import decode
from input_pipeline import synthetic


@pytest.mark.parametrize("fixture,codec,suffix,frames", [
    ("h264_video", "h264", ".mp4", 64), ("bframes_video", "h264", ".mp4", 64),
    ("intra_video", "h264", ".mp4", 24), ("mpeg4_video", "mpeg4", ".mp4", 32),
    ("vp9_video", "vp9", ".webm", 40)])
def test_files_are_real_videos(fixture, codec, suffix, frames, request):
  video = request.getfixturevalue(fixture)
  assert video.path.suffix == suffix and video.path.is_file()
  info = decode.probe(video.path)
  assert (info.codec, info.num_frames, info.height, info.width) == (codec, frames, 240, 320)
  assert video.boxes.shape == (frames, 3, 4) and video.boxes.dtype == np.float32
  assert video.velocities.shape == (3, 2) and video.velocities.dtype == np.float32


def _frame_types(path) -> str:
  with av.open(str(path)) as container:
    return "".join("?IPB"[int(f.pict_type)] for f in container.decode(video=0))


def test_codec_settings(h264_video, bframes_video, intra_video):
  clean = _frame_types(h264_video.path)
  assert "B" not in clean and [i for i, t in enumerate(clean) if t == "I"] == [0, 16, 32, 48]
  assert "B" in _frame_types(bframes_video.path)
  assert set(_frame_types(intra_video.path)) == {"I"}


def test_boxes_follow_velocities_and_bounce(h264_video):
  video = h264_video
  boxes = video.boxes
  assert (boxes[..., 0] >= 0).all() and (boxes[..., 1] >= 0).all()
  assert (boxes[..., 2] <= 320).all() and (boxes[..., 3] <= 240).all()
  sizes = boxes[..., 2:] - boxes[..., :2]
  assert (sizes == sizes[0]).all() and (sizes >= 40).all() and (sizes <= 72).all()
  steps = np.abs(np.diff(boxes[..., :2], axis=0))  # [F - 1, K, 2]
  speed = np.abs(video.velocities)
  assert (steps <= np.ceil(speed) + 1).all()  # rounded positions: at most 1 px off per frame
  np.testing.assert_allclose(steps.mean(axis=0), speed, atol=0.35)  # bounces keep |v|
  touches = (boxes[..., 0] == 0) | (boxes[..., 1] == 0) | (boxes[..., 2] == 320) | (
      boxes[..., 3] == 240)
  assert touches.any()  # motion reaches the edges
  speeds = np.linalg.norm(video.velocities, axis=1)
  assert ((speeds >= 2.0) & (speeds <= 4.0)).all()


def test_drawn_objects_are_where_the_boxes_say(tmp_path):
  video = synthetic.make_video(tmp_path / "lossless", num_frames=6, num_objects=1, seed=3,
                               encoder_options={"qp": "0"})
  # Compare luma: yuv420p subsamples colour 2x2, which blurs the texture's colour edges differently
  # at odd and even positions.
  luma = decode.decode_frames(video.path, range(6)) @ np.array([0.299, 0.587, 0.114])
  x0, y0, x1, y1 = video.boxes[0, 0].astype(int)
  first = luma[0, y0:y1, x0:x1]
  for t in range(1, 6):
    dx, dy = (video.boxes[t, 0, :2] - video.boxes[0, 0, :2]).astype(int)
    moved = luma[t, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    off = luma[t, y0 + dy:y1 + dy, x0 + dx + 1:x1 + dx + 1]
    assert np.abs(moved - first).mean() < 3.0
    assert np.abs(moved - first).mean() * 5 < np.abs(off - first).mean()


def test_camera_pan_shifts_the_background(pan_video):
  frames = decode.decode_frames(pan_video.path, [10, 11]).astype(int)
  # Background moves by (-3, -1): frame 11 at (x, y) shows what frame 10 had at (x + 3, y + 1).
  np.testing.assert_array_less(np.abs(frames[1, 20:-20, 20:-20] -
                                      frames[0, 21:-19, 23:-17]).mean(), 4.0)
  assert pan_video.camera_pan == (3.0, 1.0)
  assert pan_video.boxes.shape == (32, 0, 4)


def test_deterministic_by_seed(tmp_path):
  a = synthetic.make_video(tmp_path / "a", num_frames=8, seed=7)
  b = synthetic.make_video(tmp_path / "b", num_frames=8, seed=7)
  c = synthetic.make_video(tmp_path / "c", num_frames=8, seed=8)
  np.testing.assert_array_equal(a.boxes, b.boxes)
  np.testing.assert_array_equal(decode.decode_frames(a.path, range(8)),
                                decode.decode_frames(b.path, range(8)))
  assert not np.array_equal(a.boxes, c.boxes)


def test_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="codec"):
    synthetic.make_video(tmp_path / "x", codec="h265")
  with pytest.raises(ValueError, match="style"):
    synthetic.make_video(tmp_path / "x", style="plaid")
  with pytest.raises(ValueError, match="even"):
    synthetic.make_video(tmp_path / "x", height=121)


def test_bands_style_rows_are_one_colour(tmp_path):
  video = synthetic.make_video(tmp_path / "bands", num_frames=8, height=64, width=96,
                               object_size=(8, 16), style="bands", seed=0)
  boxes = video.boxes
  assert (boxes[..., 0] == 0).all() and (boxes[..., 2] == 96).all()  # full-width bars
  assert (video.velocities[:, 0] == 0).all() and (np.abs(video.velocities[:, 1]) >= 2).all()
  assert (np.abs(np.diff(boxes[..., 1], axis=0)).mean(axis=0) >= 1).all()  # up or down
  assert synthetic.dominant_direction(video) in (2, 6)

  def row_deviation(v):  # mean distance of a pixel from its row's mean colour
    frames = decode.decode_frames(v.path, range(8)).astype(np.float32)
    return np.abs(frames - frames.mean(axis=2, keepdims=True)).mean()

  textured = synthetic.make_video(tmp_path / "textured", num_frames=8, height=64, width=96,
                                  object_size=(8, 16), seed=0)
  assert row_deviation(video) < 6.0 and row_deviation(video) * 4 < row_deviation(textured)
  # One bar: it is a vivid colour (one channel high, another low) where its box says.
  bar = synthetic.make_video(tmp_path / "bar", num_frames=4, height=64, width=96, num_objects=1,
                             object_size=(12, 12), style="bands", seed=3)
  frames = decode.decode_frames(bar.path, range(4)).astype(np.float32)
  for t in range(4):
    _, y0, _, y1 = bar.boxes[t, 0].astype(int)
    colour = frames[t, y0 + 2:y1 - 2].mean(axis=(0, 1))
    assert colour.max() > 200 and colour.min() < 60


@pytest.mark.parametrize("velocity,label", [((1, 0), 0), ((1, -1), 1), ((0, -1), 2),
                                            ((-1, 0), 4), ((0, 2), 6), ((1, 0.3), 0),
                                            ((1, 1), 7)])
def test_direction_label(velocity, label):
  assert synthetic.direction_label(np.array(velocity, np.float32)) == label


def test_frame_velocities_flip_at_bounces(h264_video):
  video = h264_video
  speed = np.abs(video.frame_velocities)
  np.testing.assert_allclose(speed, np.broadcast_to(np.abs(video.velocities), speed.shape))
  np.testing.assert_array_equal(video.frame_velocities[0], video.velocities)
  # Over 8 frames without a bounce, the drawn boxes move by ~8 x the frame velocity.
  for k in range(3):
    signs = np.sign(video.frame_velocities[:, k])
    for t in range(video.num_frames - 8):
      if (signs[t:t + 9] == signs[t]).all():
        moved = video.boxes[t + 8, k, :2] - video.boxes[t, k, :2]
        np.testing.assert_allclose(moved, 8 * video.frame_velocities[t, k], atol=1.0)


def test_dominant_direction():
  frames = np.zeros((10, 2, 2), np.float32)
  frames[:, 0] = (1.0, 0.0)  # the small object: right
  frames[:4, 1] = (0.0, 2.0)  # the large object: down for 4 frames, then up for 6
  frames[4:, 1] = (0.0, -2.0)
  boxes = np.zeros((10, 2, 4), np.float32)
  boxes[:, 0] = (0, 0, 10, 10)
  boxes[:, 1] = (0, 0, 20, 20)
  video = synthetic.SyntheticVideo(path=None, boxes=boxes, velocities=frames[0],
                                   frame_velocities=frames, camera_pan=(0.0, 0.0), num_frames=10,
                                   height=32, width=32, codec="h264")
  assert synthetic.dominant_direction(video) == 2  # up


def test_make_dataset(tmp_path):
  list_path = synthetic.make_dataset(tmp_path / "data", 4, seed=2, num_frames=8, height=64,
                                     width=96, object_size=(16, 24))
  lines = list_path.read_text().splitlines()
  assert list_path == tmp_path / "data" / "train.csv" and len(lines) == 4
  for i, line in enumerate(lines):
    rel, label = line.split(" ")
    assert rel == f"videos/video_{i:05d}.mp4" and (tmp_path / "data" / rel).is_file()
    video = synthetic.make_video(tmp_path / "again", num_frames=8, height=64, width=96,
                                 object_size=(16, 24), seed=2 * 1_000_003 + i)
    assert int(label) == synthetic.dominant_direction(video)
  assert decode.probe(tmp_path / "data" / lines[0].split()[0]).num_frames == 8
