"""Shared fixtures: synthetic videos written once per test session (real encoded files).

Every video is 320x240, 64 frames at 25 fps with three moving, bouncing objects unless noted, and
comes as a `synthetic.SyntheticVideo` (path + ground-truth boxes and velocities).
"""

from __future__ import annotations

import os

# 8 fake CPU devices for the sharding tests; must be set before anything imports JAX.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

import pytest  # pylint: disable=g-import-not-at-top

from input_pipeline import synthetic


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
  """Directory holding the session's generated videos."""
  return tmp_path_factory.mktemp("synthetic_videos")


def _make(video_dir, name: str, **kwargs) -> synthetic.SyntheticVideo:
  kwargs.setdefault("num_frames", 64)
  kwargs.setdefault("seed", 1)
  return synthetic.make_video(video_dir / name, **kwargs)


@pytest.fixture(scope="session")
def h264_video(video_dir):
  """H.264 for clean per-frame vectors: no B-frames, one reference frame, keyframe every 16."""
  return _make(video_dir, "h264", codec="h264")


@pytest.fixture(scope="session")
def bframes_video(video_dir):
  """H.264 with libx264's default B-frames and 3 reference frames (keyframe every 16)."""
  return _make(video_dir, "bframes", codec="h264_bframes", encoder_options={"g": "16"})


@pytest.fixture(scope="session")
def intra_video(video_dir):
  """All-intra H.264: the codec exports vectors, but there are none."""
  return _make(video_dir, "intra", codec="h264_intra", num_frames=24)


@pytest.fixture(scope="session")
def vp9_video(video_dir):
  """VP9 in WebM: no motion vectors exported, no frame count in the header."""
  return _make(video_dir, "vp9", codec="vp9", num_frames=40)


@pytest.fixture(scope="session")
def mpeg4_video(video_dir):
  """MPEG-4 part 2 (P-frames only)."""
  return _make(video_dir, "mpeg4", codec="mpeg4", num_frames=32)


@pytest.fixture(scope="session")
def pan_video(video_dir):
  """Background only, the camera panning 3 px/frame right and 1 px/frame down."""
  return _make(video_dir, "pan", codec="h264", num_frames=32, num_objects=0,
               camera_pan=(3.0, 1.0))


@pytest.fixture(scope="session")
def pan_objects_video(video_dir):
  """The same pan with three moving objects on top."""
  return _make(video_dir, "pan_objects", codec="h264", num_frames=32, camera_pan=(3.0, 1.0))


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory):
  """8 small H.264 videos (48x64, 12 frames) + train.txt, for training tests. Read-only."""
  root = tmp_path_factory.mktemp("tiny_videos")
  synthetic.make_dataset(root, 8, seed=2, list_name="train.txt", num_frames=12, height=48,
                         width=64, num_objects=2, object_size=(12, 20))
  return root
