"""Tests for input_pipeline/saliency.py and launch/saliency.py (MGM's saliency score)."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

from input_pipeline import decode
from input_pipeline import saliency
from input_pipeline import synthetic

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "launch" / "saliency.py"


@pytest.fixture(scope="module")
def cli():
  spec = importlib.util.spec_from_file_location("launch_saliency", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def movers(tmp_path_factory):
  """A still-camera video with three movers, 96x128, 20 frames."""
  root = tmp_path_factory.mktemp("saliency_videos")
  return synthetic.make_video(root / "movers.mp4", num_frames=20, height=96, width=128,
                              num_objects=3, object_size=(20, 32), seed=4)


def _entry(video, shift=(0.0, 0.0), frames=None):
  boxes = video.boxes + np.array([*shift, *shift], np.float32)
  frames = range(video.num_frames) if frames is None else frames
  return saliency.VideoBoxes(str(video.path), {f: boxes[f] for f in frames})


def test_inside_pixels_is_half_open_by_pixel_centre_and_clipped():
  inside = saliency.inside_pixels(np.array([[1, 2, 4, 3], [6.4, -5, 99, 1.6]]), 4, 8)
  want = np.zeros((4, 8), bool)
  want[2, 1:4] = True  # rows [2, 3), columns [1, 4)
  want[0:2, 6:8] = True  # x0 = 6.4: column 6's centre 6.5 is inside; y1 = 1.6: rows 0, 1
  np.testing.assert_array_equal(inside, want)
  assert not saliency.inside_pixels(np.zeros((0, 4)), 4, 8).any()


def test_read_and_write_round_trip(tmp_path):
  path = saliency.write_boxes(tmp_path / "b.jsonl", [
      ("a.mp4", {3: np.array([[0, 0, 10, 10]]), 0: np.zeros((0, 4))}),
      ("/abs/b.mp4", {})])
  entries = saliency.read_boxes(path)
  assert [e.video for e in entries] == [str(tmp_path / "a.mp4"), "/abs/b.mp4"]
  assert list(entries[0].frames) == [0, 3] and entries[0].frames[0].shape == (0, 4)
  np.testing.assert_array_equal(entries[0].frames[3], [[0, 0, 10, 10]])
  assert entries[1].line == 2


@pytest.mark.parametrize("line, match", [
    ("{not json", "not a JSON line"),
    ("[1, 2]", "expected an object"),
    ('{"frames": {}}', "'video'"),
    ('{"video": "a.mp4", "frames": []}', "'frames'"),
    ('{"video": "a.mp4", "frames": {"x1": []}}', "not a frame index"),
    ('{"video": "a.mp4", "frames": {"0": [[0, 0, 5]]}}', "box 0"),
    ('{"video": "a.mp4", "frames": {"0": [[5, 0, 5, 9]]}}', "x0 < x1"),
    ('{"video": "a.mp4", "frames": {"0": [[0, 0, 5, true]]}}', "numbers"),
    ('{"video": "a.mp4", "frames": {"0": {}}}', "list of"),
    ('{"video": "a.mp4", "frames": {}, "boxes": 1}', "unknown field"),
])
def test_malformed_lines_name_the_file_and_line(tmp_path, line, match):
  path = tmp_path / "boxes.jsonl"
  path.write_text('# a comment\n{"video": "ok.mp4", "frames": {}}\n\n' + line + "\n")
  with pytest.raises(saliency.BoxFileError, match=match) as info:
    saliency.read_boxes(path)
  assert f"{path}:4" in str(info.value)


def test_empty_or_missing_box_file(tmp_path):
  (tmp_path / "empty.jsonl").write_text("\n# nothing\n")
  with pytest.raises(saliency.BoxFileError, match="no videos"):
    saliency.read_boxes(tmp_path / "empty.jsonl")
  with pytest.raises(saliency.BoxFileError, match="cannot read"):
    saliency.read_boxes(tmp_path / "missing.jsonl")


def test_true_boxes_score_far_above_one_and_shifted_boxes_lower(movers):
  true = saliency.score_video(_entry(movers))
  assert true.motion_source == "mv" and true.frames == movers.num_frames
  assert true.mean_inside > 1.0 and true.score > 5.0
  shifted = saliency.score_video(_entry(movers, shift=(37.0, 23.0)))
  assert shifted.score < 0.5 * true.score
  some = saliency.score_video(_entry(movers, frames=[2, 3, 11]))  # two runs of frames
  assert some.frames == 3 and some.score > 5.0
  diff = saliency.score_video(_entry(movers), motion="frame_diff")
  assert diff.motion_source == "frame_diff" and diff.score > 2.0
  assert saliency.pooled([true, shifted]) == pytest.approx(
      (true.sum_inside + shifted.sum_inside) / (true.pixels_inside + shifted.pixels_inside)
      / ((true.sum_outside + shifted.sum_outside)
         / (true.pixels_outside + shifted.pixels_outside)))
  assert saliency.mean_score([true, shifted]) == pytest.approx((true.score + shifted.score) / 2)


def test_score_edge_cases():
  none_outside = saliency.Score("v", 1, "mv", 5.0, 10.0, 0.0, 10.0)
  assert math.isinf(none_outside.score)
  assert math.isnan(saliency.Score("v", 1, "mv", 5.0, 10.0, 0.0, 0.0).score)
  assert saliency.mean_score([none_outside]) != saliency.mean_score([none_outside])  # nan


def test_frames_past_the_end_raise_a_decode_error(movers):
  with pytest.raises(decode.VideoDecodeError, match="only 20 frames"):
    saliency.score_video(saliency.VideoBoxes(str(movers.path), {25: movers.boxes[0]}))


def test_cli_scores_a_box_file_and_names_skipped_videos(cli, movers, tmp_path, capsys):
  boxes = saliency.write_boxes(tmp_path / "boxes.jsonl", [
      (str(movers.path), dict(enumerate(movers.boxes))), ("gone.mp4", {0: movers.boxes[0]})])
  summary = cli.main([f"--boxes={boxes}"])
  out = capsys.readouterr().out.strip().splitlines()
  assert json.loads(out[-1]) == json.loads(json.dumps(summary))
  assert summary["scored"] == 1 and summary["skipped"] == 1
  assert any(line.startswith("skipped 1 of 2 videos") and "gone.mp4" in line for line in out)
  assert summary["mean_score"] > 5.0 and summary["pooled_score"] == summary["mean_score"]


def test_cli_generates_videos_with_their_boxes(cli, tmp_path, capsys):
  summary = cli.main(["--generate=2", f"--generate_dir={tmp_path}"])
  assert (tmp_path / "boxes.jsonl").is_file() and summary["scored"] == 2
  scores = [v["score"] for v in summary["per_video"].values()]
  assert scores[0] > 5.0 and scores[1] > 1.0  # a still camera; a panning one
  assert "| generated_001.mp4 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["--motion=nope", "--generate=1"], ["extra", "--generate=1"]])
def test_bad_command_lines_exit(cli, argv):
  with pytest.raises(SystemExit):
    cli.main(argv)


def test_cli_malformed_box_file_is_one_error(cli, tmp_path):
  (tmp_path / "bad.jsonl").write_text('{"video": 3, "frames": {}}\n')
  with pytest.raises(SystemExit, match=r"bad.jsonl:1: field 'video'"):
    cli.main([f"--boxes={tmp_path / 'bad.jsonl'}"])
