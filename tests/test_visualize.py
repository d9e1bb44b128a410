"""Tests for launch/visualize.py: the mask/motion figure is produced from a real encoded video."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
from PIL import Image

from input_pipeline import synthetic
from input_pipeline import clip as clip_lib

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "launch" / "visualize.py"


@pytest.fixture(scope="module")
def visualize():
  spec = importlib.util.spec_from_file_location("launch_visualize", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _assert_png(path, num_slots):
  with Image.open(path) as image:
    assert image.format == "PNG"
    width, height = image.size
  assert width > 100 * num_slots and height > 200


@pytest.mark.parametrize("strategy", ["mgm", "tube"])
def test_main_on_a_small_synthetic_video(visualize, tmp_path, strategy):
  video = synthetic.make_video(tmp_path / "small.mp4", num_frames=16, height=112, width=112,
                               num_objects=3, object_size=(16, 32), seed=1)
  out = visualize.main([str(video.path), "--strategy", strategy, "--out",
                        str(tmp_path / "masks.png"), "--num_frames", "8", "--stride", "2",
                        "--size", "112"])
  assert out == tmp_path / "masks.png"
  _assert_png(out, num_slots=4)


def test_main_with_the_synthetic_flag(visualize, tmp_path):
  out = visualize.main(["--synthetic", "--out", str(tmp_path / "syn.png"), "--num_frames", "4",
                        "--stride", "2", "--size", "64", "--motion", "frame_diff"])
  _assert_png(out, num_slots=2)


def test_render_draws_two_rows_per_slot(visualize):
  rng = np.random.default_rng(0)
  clip = clip_lib.Clip(frames=rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8),
              flow=rng.normal(size=(4, 8, 8, 2)).astype(np.float32),
              magnitude=rng.random((4, 8, 8)).astype(np.float32),
              has_vectors=np.ones(4, bool), motion_source="mv",
              frame_indices=np.arange(4, dtype=np.int64), name="hand-built")
  mask = np.zeros((2, 4, 4), bool)
  mask[:, :3, :3] = True
  fig = visualize.render(clip, mask, clip.magnitude.reshape(2, 2, 8, 8).mean(1), tubelet=2,
                         patch=16, title="t")
  assert len(fig.axes) == 4
  assert "9 masked" in fig.axes[0].get_title()
  visualize.plt.close(fig)


@pytest.mark.parametrize("argv", [
    ["--out", "x.png"],  # neither VIDEO nor --synthetic
    ["v.mp4", "--synthetic", "--out", "x.png"],  # both
    ["v.mp4", "--out", "x.png", "--size", "100"],  # not a multiple of the patch
    ["v.mp4", "--out", "x.png", "--strategy", "nope"],
])
def test_bad_command_lines_exit(visualize, argv):
  with pytest.raises(SystemExit):
    visualize.main(argv)
