"""Tests for input_pipeline/motion_energy.py and launch/motion_energy.py (visible motion energy)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from input_pipeline import motion
from input_pipeline import motion_energy as me
from input_pipeline import synthetic
from mgm_jax import masking

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "launch" / "motion_energy.py"


@pytest.fixture(scope="module")
def cli():
  spec = importlib.util.spec_from_file_location("launch_motion_energy", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """Two small H.264 videos with two movers: a still camera and a panning one."""
  root = tmp_path_factory.mktemp("energy_videos")
  return [synthetic.make_video(root / f"v{i}.mp4", num_frames=20, height=112, width=144,
                               num_objects=2, object_size=(24, 40), camera_pan=pan, seed=3)
          for i, pan in enumerate([(0.0, 0.0), (2.0, 1.0)])]


def _clip(video):
  view, previous = me.load_view(video.path, num_frames=8, stride=2, size=112)
  energy = me.token_energy(view.frames, previous, tubelet=2, patch=16)
  return view, previous, energy, motion.to_token_slots(view.magnitude, 2)


def test_token_energy_is_the_squared_luma_difference_per_token():
  frames = np.zeros((2, 32, 32, 3), np.uint8)
  frames[1, 5, 20] = 10  # grey: luma 10, energy 100 in token (0, 0, 1), frame 1
  energy = me.token_energy(frames, None, tubelet=2, patch=16)
  want = np.zeros((1, 2, 2), np.float32)
  want[0, 0, 1] = 100.0
  np.testing.assert_allclose(energy, want, rtol=1e-5)
  previous = np.full((32, 32, 3), 2, np.uint8)  # frame 0 vs the frame before: 4 per pixel
  with_previous = me.token_energy(frames, previous, tubelet=2, patch=16)
  np.testing.assert_allclose(with_previous - energy, np.full((1, 2, 2), 4.0 * 256), rtol=1e-5)
  red = np.zeros((2, 16, 16, 3), np.uint8)
  red[1, ..., 0] = 100
  assert me.token_energy(red, None, tubelet=2, patch=16)[0, 0, 0] == pytest.approx(
      256 * 29.9 ** 2, rel=1e-4)
  with pytest.raises(ValueError, match="tokens"):
    me.token_energy(np.zeros((3, 32, 32, 3), np.uint8), None, tubelet=2, patch=16)


def test_visible_fraction():
  energy = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
  mask = np.zeros((2, 2, 2), bool)
  mask[1] = True
  assert me.visible_fraction(energy, mask) == pytest.approx(6 / 28)
  assert me.visible_fraction(np.zeros((2, 2, 2), np.float32), mask) is None


def test_oracles_have_exact_counts_and_bound_the_strategies():
  rng = np.random.default_rng(0)
  grid = (4, 7, 7)
  for trial in range(5):
    energy = rng.gamma(0.3, size=grid).astype(np.float32)
    for ratio in (0.3, 0.75, 0.9):
      n = masking.masked_per_slot(grid, ratio)
      box = me.oracle_box(energy, ratio)
      tokens = me.oracle_tokens(energy, ratio)
      for mask in (box, tokens):
        assert (mask.reshape(grid[0], -1).sum(axis=1) == n).all()
      bw, bh = me.box_sides(n, grid[1], grid[2])
      for s in range(grid[0]):  # the box's cells lie within one bw x bh rectangle
        ys, xs = np.nonzero(box[s])
        assert ys.max() - ys.min() < bh and xs.max() - xs.min() < bw
      hidden_box = energy[box].sum()
      assert energy[tokens].sum() >= hidden_box - 1e-4
      for seed in range(4):
        block = masking.make_mask("block", grid, ratio, trial * 10 + seed)
        assert hidden_box >= energy[block].sum() - 1e-4
        centred = masking.make_mask("mgm", grid, ratio, seed, motion=rng.random(grid), jitter=0)
        assert hidden_box >= energy[centred].sum() - 1e-4
        for strategy in ("tube", "smm", "mgm_sparse"):
          other = masking.make_mask(strategy, grid, ratio, seed, motion=energy)
          assert energy[tokens].sum() >= energy[other].sum() - 1e-4


def test_variant_parse_and_names():
  assert me.Variant.parse("mgm") == me.Variant("mgm")
  assert me.Variant.parse("oracle_box").name == "oracle_box"
  assert me.Variant.parse("mgm/box").name == "mgm/box"
  assert me.Variant.parse("mgm_sparse/top1/2") == me.Variant("mgm_sparse", "top1", 2)
  for bad, match in [("nope", "unknown strategy"), ("tube/top1/1", "apply to"),
                     ("mgm/nope", "pool"), ("mgm/top1/x", "smooth"), ("mgm/top1/1/2", "expected"),
                     ("", "expected")]:
    with pytest.raises(ValueError, match=match):
      me.Variant.parse(bad)
  names = [v.name for v in me.default_variants()]
  assert names[:len(masking.STRATEGIES)] == list(masking.STRATEGIES)
  assert names[-2:] == list(me.ORACLES)


def test_mgm_hides_the_movers_of_a_still_camera(videos):
  view, previous, energy, slots = _clip(videos[0])
  assert view.frames.shape == (8, 112, 112, 3) and previous is not None
  assert energy.shape == (4, 7, 7) and energy.sum() > 0
  def mean_visible(name, seeds=6):
    variant = me.Variant.parse(name)
    return np.mean([me.visible_fraction(energy, me.make_variant_mask(
        variant, energy.shape, 0.75, np.random.default_rng(s), slots, energy=energy))
                    for s in range(seeds)])
  random = mean_visible("random")
  assert 0.1 < random < 0.45  # about 1 - ratio
  assert mean_visible("mgm") < 0.5 * random  # the premise on a clean clip
  assert mean_visible("oracle_box", 1) <= mean_visible("mgm") + 1e-6


def test_add_clip_reports_every_variant_ratio_and_seed(videos):
  _, _, energy, slots = _clip(videos[1])
  variants = [me.Variant("random"), me.Variant("mgm"), me.Variant("oracle_tokens")]
  report = me.Report()
  for index in range(2):
    me.add_clip(report, energy, slots, "clip", variants=variants, ratios=[0.5, 0.75], seeds=3,
                clip_index=index)
  me.add_clip(report, np.zeros_like(energy), slots, "still", variants=variants, ratios=[0.5],
              seeds=3, clip_index=2)
  assert report.static_clips == ["still"]
  assert report.summary("random", 0.5)[2] == 6 and report.summary("oracle_tokens", 0.75)[2] == 2
  mean, std, _ = report.summary("oracle_tokens", 0.75)
  assert std == 0.0 and mean <= report.summary("mgm", 0.75)[0]
  assert report.mask_count["random"] == 12
  assert np.isnan(report.summary("tube", 0.5)[0])


def test_cli_prints_a_table_and_one_json_line_and_names_broken_videos(cli, videos, tmp_path,
                                                                       capsys):
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"not a video at all")
  listing = tmp_path / "list.txt"
  listing.write_text(f"{videos[0].path} 0\n# comment\n{broken.name} 1\n")
  summary = cli.main([f"--videos={listing},{videos[1].path.parent}/v1.*",
                      "--strategies=random,mgm,oracle_box", "--ratios=0.5,0.9", "--seeds=2",
                      "--num_frames=8", "--size=112"])
  out = capsys.readouterr().out.strip().splitlines()
  assert json.loads(out[-1]) == json.loads(json.dumps(summary))
  assert summary["videos"] == 3 and summary["skipped"] == 1 and summary["measured"] == 2
  assert any(line.startswith("skipped 1 of 3 videos: ") and "broken.mp4" in line for line in out)
  rows = [line for line in out if line.startswith("| mgm |")]
  assert len(rows) == 1 and rows[0].count("±") == 2
  assert summary["visible_fraction"]["random"]["0.5"]["n"] == 4
  assert summary["visible_fraction"]["oracle_box"]["0.9"]["n"] == 2


def test_cli_generates_videos(cli, capsys):
  summary = cli.main(["--generate=2", "--strategies=random,mgm", "--ratios=0.75", "--seeds=1",
                      "--num_frames=8", "--size=112"])
  assert summary["measured"] == 2 and summary["motion_sources"] == {"mv": 2}
  assert summary["visible_fraction"]["mgm"]["0.75"]["mean"] < 0.25
  assert "| random |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    [],  # no videos
    ["--generate=1", "--strategies=tube/box"],
    ["--generate=1", "--ratios=0.999"],  # masks every token of a slot
    ["--generate=1", "--size=100"],
    ["--videos=/nonexistent/*.mp4"],
])
def test_bad_command_lines_exit(cli, argv):
  with pytest.raises(SystemExit):
    cli.main(argv)
