"""MGM's saliency score: how much stronger motion is inside the ground-truth boxes than outside.

The paper (Sec. 1) tests its premise with "the ratio of average motion magnitude within bounding
boxes to average motion magnitude outside bounding boxes" (1.47 on SSv2, 1.28 on K400, with the
codec's motion vectors MGM steers by). Here, per video:

    score = mean magnitude over the pixels inside the boxes / mean over the pixels outside,

both means pooled over all annotated frames of the video. The magnitude of frame f is the motion
the trainer's masks are steered by (`decode.decode_clip`, any motion policy: "mv" = codec
vectors, as the paper; "frame_diff"; whatever else `decode.MOTION_POLICIES` offers), here of
frame f itself (from frame f - 1: frames are decoded in runs of consecutive frames, so no
accumulation over a stride), on the 8-px motion grid of the ORIGINAL video, nearest-neighbour
upsampled to pixels as the paper's Eq. 6 (a cell's value counts once per pixel of it on each
side of a box edge). Frames without motion of their own (an I-frame, frame 0 of the frame
difference) get it by `motion.py`'s fill rule, as the trainer's masks do. A data set's score is
reported two ways: the mean of the per-video scores, and `pooled` (the means over every
annotated pixel of every video). An infinite score (no motion outside the boxes) is math.inf.

Box file format (JSON Lines, UTF-8): one line per video,

    {"video": "clips/a.mp4", "frames": {"0": [[x0, y0, x1, y1], ...], "7": [], ...}}

  * "video": a path, absolute or relative to the box file's folder.
  * "frames": 0-based display-order frame index (a string of digits, JSON keys being strings) ->
    a list of boxes [x0, y0, x1, y1] in pixels of the original video, x to the right, y down,
    half-open: pixel column c is inside when x0 <= c + 0.5 < x1 (the pixel's centre), rows
    likewise; boxes are clipped to the frame. The union of a frame's boxes is "inside". An
    empty list is a frame annotated with no object (all of it outside); frames without an entry
    are not scored.
  * Blank lines and lines starting with "#" are skipped. Anything else that does not fit raises
    `BoxFileError` naming the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import motion as motion_lib
from input_pipeline import synthetic

_RUN = 32  # frames decoded per run at most (bounds the RGB frames held at once)


class BoxFileError(ValueError):
  """A malformed box file; the message names the file, the line and the field."""


@dataclasses.dataclass(frozen=True)
class VideoBoxes:
  """One line of a box file.

  Attributes:
    video: the video's path (resolved against the box file's folder).
    frames: {frame index: float32 [K, 4] boxes (x0, y0, x1, y1)}, K >= 0.
    line: the line number in the box file.
  """

  video: str
  frames: dict[int, np.ndarray]
  line: int = 0


def _parse_boxes(value, where: str) -> np.ndarray:
  if not isinstance(value, list):
    raise BoxFileError(f"{where}: expected a list of [x0, y0, x1, y1] boxes, got {value!r:.60}")
  boxes = []
  for k, box in enumerate(value):
    if (not isinstance(box, list) or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
      raise BoxFileError(f"{where}, box {k}: expected [x0, y0, x1, y1] numbers, got {box!r:.60}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in box) or x1 <= x0 or y1 <= y0:
      raise BoxFileError(f"{where}, box {k}: need finite x0 < x1 and y0 < y1, got {box!r}")
    boxes.append((x0, y0, x1, y1))
  return np.asarray(boxes, np.float32).reshape(-1, 4)


def _parse_line(record, where: str, folder: pathlib.Path, number: int) -> VideoBoxes:
  if not isinstance(record, dict):
    raise BoxFileError(f"{where}: expected an object {{\"video\": ..., \"frames\": ...}}")
  unknown = sorted(set(record) - {"video", "frames"})
  if unknown:
    raise BoxFileError(f"{where}: unknown field(s) {unknown}")
  video = record.get("video")
  if not isinstance(video, str) or not video:
    raise BoxFileError(f"{where}: field 'video' must be a non-empty path string")
  frames = record.get("frames")
  if not isinstance(frames, dict):
    raise BoxFileError(f"{where}: field 'frames' must be an object {{frame index: boxes}}")
  parsed = {}
  for key, value in frames.items():
    if not key.isdigit():
      raise BoxFileError(f"{where}: frames key {key!r} is not a frame index (digits)")
    parsed[int(key)] = _parse_boxes(value, f"{where}: frames[{key!r}]")
  return VideoBoxes(video=str(folder / video), frames=dict(sorted(parsed.items())), line=number)


def read_boxes(path: str | os.PathLike) -> list[VideoBoxes]:
  """Reads a box file (module docstring); BoxFileError on any malformed line, or none at all."""
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise BoxFileError(f"{path}: cannot read the box file ({e})") from e
  entries = []
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    where = f"{path}:{number}"
    try:
      record = json.loads(line)
    except ValueError as e:
      raise BoxFileError(f"{where}: not a JSON line ({e}): {line!r:.80}") from e
    entries.append(_parse_line(record, where, path.parent, number))
  if not entries:
    raise BoxFileError(f"{path}: no videos in the box file")
  return entries


def write_boxes(path: str | os.PathLike,
                entries: Iterable[tuple[str, Mapping[int, np.ndarray]]]) -> pathlib.Path:
  """Writes (video path as it should appear, {frame: [K, 4] boxes}) pairs as a box file."""
  path = pathlib.Path(path)
  lines = []
  for video, frames in entries:
    record = {"video": os.fspath(video),
              "frames": {str(int(f)): np.asarray(b, float).reshape(-1, 4).tolist()
                         for f, b in sorted(frames.items())}}
    lines.append(json.dumps(record) + "\n")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(lines), encoding="utf-8")
  return path


def inside_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """bool [H, W]: the union of `boxes` [K, 4] (half-open, by pixel centre), clipped to the frame."""
  inside = np.zeros((height, width), bool)
  for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
    # Pixel c is inside when x0 <= c + 0.5 < x1, i.e. ceil(x0 - 0.5) <= c < ceil(x1 - 0.5).
    c0, c1 = (min(max(math.ceil(v - 0.5), 0), width) for v in (x0, x1))
    r0, r1 = (min(max(math.ceil(v - 0.5), 0), height) for v in (y0, y1))
    inside[r0:r1, c0:c1] = True
  return inside


def _cell_counts(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(pixels inside, pixels outside) per 8-px motion cell: float64 [Gh, Gw] each."""
  height, width = inside.shape
  cell = clip_lib.MOTION_CELL
  gh, gw = motion_lib.grid_shape(height, width)
  padded = np.zeros((gh * cell, gw * cell), np.float64)
  padded[:height, :width] = inside
  real = np.zeros_like(padded)
  real[:height, :width] = 1.0
  def per_cell(a):
    return a.reshape(gh, cell, gw, cell).sum(axis=(1, 3))
  count_in = per_cell(padded)
  return count_in, per_cell(real) - count_in


@dataclasses.dataclass
class Score:
  """One video's saliency.

  Attributes:
    video: the video's path.
    frames: annotated frames scored.
    motion_source: the motion the policy gave ("mv", "frame_diff", ...).
    sum_inside, pixels_inside, sum_outside, pixels_outside: magnitude summed over the pixels
      inside / outside the boxes of all scored frames, and how many pixels that was.
  """

  video: str
  frames: int
  motion_source: str
  sum_inside: float
  pixels_inside: float
  sum_outside: float
  pixels_outside: float

  @property
  def mean_inside(self) -> float:
    return self.sum_inside / self.pixels_inside if self.pixels_inside else math.nan

  @property
  def mean_outside(self) -> float:
    return self.sum_outside / self.pixels_outside if self.pixels_outside else math.nan

  @property
  def score(self) -> float:
    """mean inside / mean outside; nan without pixels on a side, inf with no motion outside."""
    return _ratio(self.mean_inside, self.mean_outside)


def _ratio(inside: float, outside: float) -> float:
  if math.isnan(inside) or math.isnan(outside):
    return math.nan
  if outside == 0.0:
    return math.inf if inside > 0.0 else math.nan
  return inside / outside


def _runs(frames: Sequence[int], run: int) -> list[list[int]]:
  """Sorted frame indices grouped so each group spans at most `run` consecutive frames."""
  groups: list[list[int]] = []
  for f in frames:
    if groups and f - groups[-1][0] < run:
      groups[-1].append(f)
    else:
      groups.append([f])
  return groups


def score_video(entry: VideoBoxes, *, motion: str = "mv", compensate_camera: bool = False,
                run: int = _RUN) -> Score:
  """The saliency of one annotated video (module docstring).

  Raises:
    decode.VideoDecodeError: the video is unusable, or an annotated frame is past its end.
  """
  name = entry.video
  totals = np.zeros(4, np.float64)  # sum in, pixels in, sum out, pixels out
  source = None
  counts_cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
  for group in _runs(list(entry.frames), run):
    indices = np.arange(group[0], group[-1] + 1)
    clip = decode.decode_clip(name, indices, motion=motion, compensate_camera=compensate_camera,
                              name=name)
    source = clip.motion_source
    height, width = clip.frames.shape[1:3]
    for f in group:
      boxes = entry.frames[f]
      key = boxes.tobytes()
      if key not in counts_cache:
        counts_cache[key] = _cell_counts(inside_pixels(boxes, height, width))
      count_in, count_out = counts_cache[key]
      magnitude = clip.magnitude[f - group[0]].astype(np.float64)
      totals += (np.sum(magnitude * count_in), count_in.sum(),
                 np.sum(magnitude * count_out), count_out.sum())
  return Score(video=name, frames=len(entry.frames), motion_source=source or "",
               sum_inside=float(totals[0]), pixels_inside=float(totals[1]),
               sum_outside=float(totals[2]), pixels_outside=float(totals[3]))


def pooled(scores: Sequence[Score]) -> float:
  """The data set's score over every annotated pixel of every video."""
  sums = np.sum([(s.sum_inside, s.pixels_inside, s.sum_outside, s.pixels_outside)
                 for s in scores], axis=0) if scores else np.zeros(4)
  inside = sums[0] / sums[1] if sums[1] else math.nan
  outside = sums[2] / sums[3] if sums[3] else math.nan
  return _ratio(inside, outside)


def mean_score(scores: Sequence[Score]) -> float:
  """Mean of the finite per-video scores (nan if none is finite)."""
  finite = [s.score for s in scores if math.isfinite(s.score)]
  return float(np.mean(finite)) if finite else math.nan


def generate(root: str | os.PathLike, count: int, *, num_frames: int = 48, height: int = 240,
             width: int = 320, seed: int = 0) -> pathlib.Path:
  """Writes `count` synthetic videos (2-4 textured movers each; every odd one with a camera pan)
  under root and their exact boxes (every frame) as root/boxes.jsonl; returns that file.

  Video i: `synthetic.make_video(seed=seed * 1000 + i)`, movers 2 + i % 3, object sides 32-64
  px, speeds 2-4 px/frame, pan (0, 0) for even i, (+-2, 1) px/frame for odd i.
  """
  root = pathlib.Path(root)
  entries = []
  for i in range(count):
    pan = (0.0, 0.0) if i % 2 == 0 else (2.0 if i % 4 == 1 else -2.0, 1.0)
    video = synthetic.make_video(
        root / f"generated_{i:03d}.mp4", num_frames=num_frames, height=height, width=width,
        num_objects=2 + i % 3, object_size=(32, 64), max_speed=4.0, camera_pan=pan,
        seed=seed * 1000 + i)
    entries.append((video.path.name, dict(enumerate(video.boxes))))
  return write_boxes(root / "boxes.jsonl", entries)
