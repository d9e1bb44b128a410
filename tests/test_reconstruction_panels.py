"""Tests for launch/reconstruction_panels.py: one clip reconstructed under several strategies."""

from __future__ import annotations

import importlib.util
import pathlib

from flax import nnx
import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from input_pipeline import motion_energy
from input_pipeline import synthetic
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import schema

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "launch" / "reconstruction_panels.py"


@pytest.fixture(scope="module")
def panels():
  spec = importlib.util.spec_from_file_location("launch_reconstruction_panels", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny pretraining run (4 frames, 32 px) with random weights, checkpoint at step 3."""
  config = schema.defaults()
  config.model = ml_collections.ConfigDict(dict(size="tiny", num_frames=4, img_size=32))
  cfg = model_lib.model_config_from(config.model, drop_path_rate=0.0)
  abstract = nnx.eval_shape(lambda: model_lib.make_model(cfg, nnx.Rngs(0)))
  rng = np.random.default_rng(5)
  params = jax.tree.map(lambda leaf: (0.05 * rng.standard_normal(leaf.shape)).astype(np.float32),
                        nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
  return inference.save(tmp_path_factory.mktemp("panels_run"), config, params, step=3)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  return synthetic.make_video(tmp_path_factory.mktemp("panels_video") / "v.mp4", num_frames=12,
                              height=48, width=64, num_objects=2, object_size=(12, 20), seed=2)


def test_one_row_per_strategy_from_the_same_clip(panels, workdir, video, tmp_path, capsys):
  out = panels.main([f"--workdir={workdir}", f"--video={video.path}",
                     f"--out={tmp_path / 'p.png'}", "--strategies=random,tube,mgm,oracle_box"])
  assert out == tmp_path / "p.png"
  with Image.open(out) as image:
    assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 400
  lines = capsys.readouterr().out.strip().splitlines()
  assert [line.split(":")[0] for line in lines] == ["random", "tube", "mgm", "oracle_box"]
  mse = [float(line.split("MSE ")[1].split(",")[0]) for line in lines]
  assert all(0.0 < m < 1.0 for m in mse)


def test_panels_reuse_one_clip_and_mask_exact_counts(panels, workdir, video):
  panels._parse_args([f"--workdir={workdir}", f"--video={video.path}", "--out=x.png",
                      "--strategies=tube,mgm", "--ratio=0.5", "--frames=1"])
  run = panels._load(str(workdir))
  assert run.step == 3
  fig, stats = panels.panels(run, video.path, [motion_energy.Variant("tube"),
                                               motion_energy.Variant("mgm")])
  assert set(stats) == {"tube", "mgm"}
  # 1 + 2 rows (original, tube, mgm) x 2 columns (input, reconstruction of one frame).
  assert len(fig.axes) == 6
  assert "tube" in fig.axes[2].get_ylabel() and "mgm" in fig.axes[4].get_ylabel()
  masked = fig.axes[2].get_images()[0].get_array()
  original = fig.axes[0].get_images()[0].get_array()
  assert masked.shape == original.shape == (32, 32, 3)
  changed = np.any(np.asarray(masked) != np.asarray(original), axis=-1)
  assert changed.sum() == 2 * 16 * 16  # ratio 0.5 of 4 tokens per slot: 2 grey patches
  panels.plt.close(fig)


@pytest.mark.parametrize("argv", [
    ["--video=v.mp4", "--out=x.png"],  # no workdir
    ["--workdir=w", "--video=v.mp4", "--out=x.png", "--strategies=nope"],
    ["--workdir=w", "--video=v.mp4", "--out=x.png", "--frames=0"],
])
def test_bad_command_lines_exit(panels, argv):
  with pytest.raises(SystemExit):
    panels.main(argv)


def test_an_unreadable_video_is_one_error(panels, workdir, tmp_path):
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"garbage")
  with pytest.raises(SystemExit, match="bad.mp4"):
    panels.main([f"--workdir={workdir}", f"--video={bad}", f"--out={tmp_path / 'p.png'}"])
