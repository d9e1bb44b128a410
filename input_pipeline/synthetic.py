"""Synthetic test videos with known motion, written as real encoded files with PyAV.

Each video shows `num_objects` rectangles with random block textures, moving at constant velocity
over a textured background and bouncing off the frame edges, optionally seen through a panning
camera. The exact object boxes are returned, so tests can check the motion recovered from the
codec against ground truth, and `make_dataset` turns a batch of such videos into a small labelled
data set (label = the direction of the largest object's motion) for demos.

Textures: objects get random two-colour blocks plus static noise (not a checkerboard: a periodic
texture lets the encoder match a shifted copy of the pattern instead of the true motion); the
background is a sum of smooth colour waves plus fine static noise, so every block has detail for
the motion search. All noise is fixed per video (it moves with its surface), not per frame.

`style="bands"` (the CPU demo's) draws content a tiny MAE learns to fill in within a few hundred
steps: a background that is a vertical gradient between two colours, and objects that are
full-width bars of one vivid colour each (plus a faint block texture for the motion search),
moving straight up or down. Every row is then one colour, visible at the row's unmasked tokens,
and with VideoMAE's 1-D position table (tokens in (t, h, w) order) neighbours in a row are
neighbours in the table. `object_size` gives the bars' heights; their widths are the frame's.
The flat background gives a camera pan little to track.

Conventions:
  * Object positions are rounded to whole pixels when drawn (crisp textures let the encoder's motion
    search lock on). `SyntheticVideo.boxes` are the drawn boxes, so `boxes[t] - boxes[t - 1]` is
    the exact displacement; `velocities` are the nominal (pre-rounding, pre-bounce) velocities.
  * Objects move in frame coordinates: their boxes do not depend on `camera_pan`. With a pan of
    (px, py) px/frame the view window slides over a larger background canvas by (px, py) each
    frame, so the background moves by (-px, -py) px/frame in the frame.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any, Mapping

import av
import numpy as np

# Encoder settings per codec name: (container suffix, FFmpeg encoder, encoder options).
_X264_PRESET = "veryfast"  # sub-pel motion search with all partitions; fast enough for tests
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    # One reference frame, no B-frames: every P-frame vector spans exactly one frame.
    "h264": (".mp4", "libx264", {"preset": _X264_PRESET, "bf": "0", "g": "16",
                                 "x264-params": "ref=1"}),
    # libx264 defaults (B-frames, 3 reference frames): vectors span 1..3 frames, both directions.
    "h264_bframes": (".mp4", "libx264", {"preset": _X264_PRESET}),
    # Every frame an I-frame: no motion vectors at all.
    "h264_intra": (".mp4", "libx264", {"preset": _X264_PRESET, "g": "1"}),
    # MPEG-4 part 2 (P-frames only with FFmpeg's defaults).
    "mpeg4": (".mp4", "mpeg4", {"qscale": "3", "g": "16"}),
    # VP9 in WebM: FFmpeg exports no motion vectors for it.
    "vp9": (".webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "32",
                                    "b": "0", "g": "16"}),
}


@dataclasses.dataclass
class SyntheticVideo:
  """A generated video file and its ground truth.

  Attributes:
    path: the encoded file.
    boxes: float32 [F, K, 4], (x0, y0, x1, y1) of each object in each frame, frame pixel coords
      (x1, y1 exclusive).
    velocities: float32 [K, 2], nominal (dx, dy) px/frame of each object before any bounce.
    frame_velocities: float32 [F, K, 2], each object's (unrounded) velocity at each frame: the
      nominal velocity with the signs flipped by the bounces so far.
    camera_pan: (px, py) px/frame the view window moves; the background moves by minus this.
    num_frames: F.
    height: frame height in pixels.
    width: frame width in pixels.
    codec: key of `CODECS` used for encoding.
  """

  path: pathlib.Path
  boxes: np.ndarray
  velocities: np.ndarray
  frame_velocities: np.ndarray
  camera_pan: tuple[float, float]
  num_frames: int
  height: int
  width: int
  codec: str

  def displacement(self, start: int, stop: int) -> np.ndarray:
    """float32 [K, 2]: mean per-frame displacement of each object from frame `start` to `stop`."""
    d = self.boxes[stop, :, :2] - self.boxes[start, :, :2]
    return (d / max(stop - start, 1)).astype(np.float32)


def _smooth_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3]: a few random low-frequency colour waves plus fine static noise."""
  y = np.arange(height, dtype=np.float32)[:, None, None]
  x = np.arange(width, dtype=np.float32)[None, :, None]
  img = np.full((height, width, 3), 128.0, np.float32)
  for _ in range(4):
    fx, fy = rng.uniform(-0.06, 0.06, size=2)
    phase = rng.uniform(0, 2 * math.pi, size=3).astype(np.float32)
    amp = rng.uniform(10, 30, size=3).astype(np.float32)
    img += amp * np.sin(fx * x + fy * y + phase)
  img += rng.uniform(-24, 24, size=(height, width, 1)).astype(np.float32)
  return np.clip(img, 0, 255).astype(np.uint8)


def _bands_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3]: a vertical gradient between two random colours; each row one colour."""
  top, bottom = rng.uniform(30, 225, size=(2, 3)).astype(np.float32)
  ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
  return np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3)).astype(np.uint8)


def _vivid_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 [h, w, 3]: one saturated colour with a faint (+-12) random block texture."""
  colour = np.zeros(3, np.float32)
  colour[rng.permutation(3)[:2]] = [235.0, rng.uniform(0, 160)]  # one channel full, one off
  cell = int(rng.integers(4, 9))
  blocks = rng.uniform(-12, 12, size=(-(-height // cell), -(-width // cell), 1))
  pattern = np.repeat(np.repeat(blocks, cell, axis=0), cell, axis=1)[:height, :width]
  return np.clip(colour + 10 + pattern, 0, 255).astype(np.uint8)


def _object_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 [h, w, 3]: random two-colour blocks of a random size plus static noise.

  The block pattern is random, not a checkerboard: a periodic texture lets the encoder match a
  shifted copy of the pattern instead of the true motion.
  """
  cell = int(rng.integers(3, 8))
  colours = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
  blocks = rng.integers(0, 2, size=(-(-height // cell), -(-width // cell)))
  pattern = np.repeat(np.repeat(blocks, cell, axis=0), cell, axis=1)[:height, :width]
  img = colours[pattern] + rng.uniform(-40, 40, size=(height, width, 1)).astype(np.float32)
  return np.clip(img, 0, 255).astype(np.uint8)


# style -> (background, object texture) painters.
STYLES = {"textured": (_smooth_background, _object_texture),
          "bands": (_bands_background, _vivid_texture)}


def _bounce(start: np.ndarray, velocity: np.ndarray, span: np.ndarray, num_frames: int):
  """Moving at `velocity` from `start`, reflecting inside [0, span].

  Returns:
    positions [F, K, 2] and velocities [F, K, 2] (the velocity's signs flip at each reflection).
  """
  t = np.arange(num_frames, dtype=np.float64)[:, None, None]
  span = np.maximum(span, 1e-6)
  m = np.mod(start + velocity * t, 2 * span)
  return span - np.abs(m - span), np.where(m < span, velocity, -velocity)


def _encode(path: pathlib.Path, frames: np.ndarray, codec: str, fps: int,
            encoder_options: Mapping[str, str] | None) -> None:
  """Encodes uint8 [F, H, W, 3] RGB frames to `path` with the settings of `CODECS[codec]`."""
  _, encoder, options = CODECS[codec]
  options = {**options, **(encoder_options or {})}
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream(encoder, rate=fps, options=options)
    stream.width = frames.shape[2]
    stream.height = frames.shape[1]
    stream.pix_fmt = "yuv420p"
    for rgb in frames:
      frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_video(
    path: str | os.PathLike[str],
    *,
    num_frames: int = 48,
    height: int = 240,
    width: int = 320,
    num_objects: int = 3,
    object_size: tuple[int, int] = (40, 72),
    max_speed: float = 4.0,
    camera_pan: tuple[float, float] = (0.0, 0.0),
    codec: str = "h264",
    fps: int = 25,
    seed: int = 0,
    encoder_options: Mapping[str, str] | None = None,
    style: str = "textured",
    bounce: bool = True,
) -> SyntheticVideo:
  """Renders and encodes one synthetic video.

  Args:
    path: output file; its suffix is replaced by the codec's container suffix (.mp4 / .webm).
    num_frames: number of frames F.
    height: frame height (even, for yuv420p).
    width: frame width (even).
    num_objects: number of moving objects K (0 = background only, e.g. for a pure pan).
    object_size: (min, max) side length in pixels; each side is drawn uniformly from it.
    max_speed: object speeds are drawn uniformly from [max_speed / 2, max_speed] px/frame, in a
      uniformly random direction.
    camera_pan: (px, py) px/frame the camera window moves over the background canvas.
    codec: one of `CODECS`.
    fps: frame rate written to the container.
    seed: everything (textures, sizes, positions, velocities) is a function of the seed.
    encoder_options: FFmpeg encoder options overriding the codec's defaults.
    style: one of `STYLES`: "textured" (rectangles moving in any direction) or "bands"
      (full-width bars moving up or down); see the module docstring.
    bounce: False places each object's start (same random draws, rescaled) so that it does not
      reach an edge within the video, so it never bounces and keeps one direction (labels from
      any window of the clip are then exact); objects too fast for that (speed x (F - 1) >
      the room to move) still bounce. True (default): starts uniform over the frame.

  Returns:
    The file path and ground truth.
  """
  if codec not in CODECS:
    raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(CODECS)}")
  if style not in STYLES:
    raise ValueError(f"unknown style {style!r}; expected one of {sorted(STYLES)}")
  if height % 2 or width % 2:
    raise ValueError(f"height and width must be even for yuv420p, got {height}x{width}")
  path = pathlib.Path(path).with_suffix(CODECS[codec][0])
  rng = np.random.default_rng(seed)
  pan = np.asarray(camera_pan, np.float64)

  # Background canvas large enough for the whole pan.
  travel = np.abs(pan) * max(num_frames - 1, 0)
  canvas_h = height + int(math.ceil(travel[1]))
  canvas_w = width + int(math.ceil(travel[0]))
  paint_background, paint_object = STYLES[style]
  canvas = paint_background(rng, canvas_h, canvas_w)
  origin = np.where(pan < 0, travel, 0.0)  # the window starts at the side it moves away from
  t = np.arange(num_frames, dtype=np.float64)[:, None]
  offsets = np.rint(origin + pan * t).astype(np.intp)  # [F, 2] (x, y) of the window
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for f, (ox, oy) in enumerate(offsets):
    frames[f] = canvas[oy:oy + height, ox:ox + width]

  # Objects: sizes, textures and bouncing trajectories.
  lo, hi = object_size
  sizes = rng.integers(lo, hi + 1, size=(num_objects, 2))  # (w, h)
  sizes = np.minimum(sizes, [width - 2, height - 2])
  if style == "bands":
    sizes[:, 0] = width
  textures = [paint_object(rng, int(h), int(w)) for w, h in sizes]
  span = np.array([width, height], np.float64) - sizes  # [K, 2]
  start_fraction = rng.uniform(0.0, 1.0, size=(num_objects, 2))
  start = start_fraction * span
  angle = rng.uniform(0, 2 * math.pi, size=num_objects)
  speed = rng.uniform(max_speed / 2, max_speed, size=num_objects)
  velocities = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=-1)
  if style == "bands":  # straight up or down
    dy = np.where(velocities[:, 1] < 0, -speed, speed)
    velocities = np.stack([np.zeros_like(speed), dy], axis=-1)
  if not bounce:  # start where the whole straight path fits inside [0, span]
    travel = np.abs(velocities) * max(num_frames - 1, 0)
    room = np.maximum(span - travel, 0.0)
    start = np.where(velocities < 0, np.minimum(travel, span), 0.0) + start_fraction * room
  exact, frame_velocities = _bounce(start, velocities, span, num_frames)
  positions = np.rint(exact).astype(np.intp)  # [F, K, 2]
  for f in range(num_frames):
    for k, tex in enumerate(textures):
      x0, y0 = positions[f, k]
      frames[f, y0:y0 + tex.shape[0], x0:x0 + tex.shape[1]] = tex

  boxes = np.concatenate([positions, positions + sizes[None]], axis=-1).astype(np.float32)
  path.parent.mkdir(parents=True, exist_ok=True)
  _encode(path, frames, codec, fps, encoder_options)
  return SyntheticVideo(
      path=path,
      boxes=boxes.reshape(num_frames, num_objects, 4),
      velocities=velocities.astype(np.float32).reshape(num_objects, 2),
      frame_velocities=frame_velocities.astype(np.float32).reshape(num_frames, num_objects, 2),
      camera_pan=(float(pan[0]), float(pan[1])),
      num_frames=num_frames,
      height=height,
      width=width,
      codec=codec,
  )


def direction_label(velocity: np.ndarray, num_classes: int = 8) -> int:
  """Quantises a (dx, dy) velocity into `num_classes` directions; 0 = right, counter-clockwise.

  Image y points down, so "counter-clockwise" is as seen on screen (class 2 of 8 = up).
  """
  angle = math.atan2(-float(velocity[1]), float(velocity[0]))
  return int(round(angle / (2 * math.pi / num_classes))) % num_classes


def dominant_direction(video: SyntheticVideo, num_classes: int = 8) -> int:
  """The direction class the video's largest object moves in for the most frames (0 if none).

  Bounces flip the direction, so this is the most frequent `direction_label` of the object's
  per-frame velocity (ties: the class seen first).
  """
  if video.boxes.shape[1] == 0:
    return 0
  box = video.boxes[0]
  largest = int(np.argmax((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])))
  labels = [direction_label(v, num_classes) for v in video.frame_velocities[:, largest]]
  counts = np.bincount(labels, minlength=num_classes)
  best = np.flatnonzero(counts == counts.max())
  return int(min(best, key=labels.index))


def make_dataset(
    root: str | os.PathLike[str],
    num_videos: int,
    *,
    seed: int = 0,
    list_name: str = "train.csv",
    num_classes: int = 8,
    **make_video_kwargs: Any,
) -> pathlib.Path:
  """Writes `num_videos` synthetic videos under `root` plus a VideoMAE-format list file.

  The list file has one `relative/path label` line per video (paths relative to `root`). The label
  is the dominant direction of the largest object (`dominant_direction`, `num_classes`
  directions: 8, or 4 = right / up / left / down). Video i uses
  seed `seed * 1_000_003 + i`, so data sets with different seeds do not share videos.

  Args:
    root: output directory (created if missing).
    num_videos: number of videos.
    seed: data set seed.
    list_name: file name of the list file inside `root`.
    **make_video_kwargs: forwarded to `make_video` (e.g. num_frames, height, width, codec).

  Returns:
    Path of the list file.
  """
  root = pathlib.Path(root)
  (root / "videos").mkdir(parents=True, exist_ok=True)
  lines = []
  for i in range(num_videos):
    video = make_video(root / "videos" / f"video_{i:05d}", seed=seed * 1_000_003 + i,
                       **make_video_kwargs)
    label = dominant_direction(video, num_classes)
    lines.append(f"{video.path.relative_to(root).as_posix()} {label}\n")
  list_path = root / list_name
  list_path.write_text("".join(lines))
  return list_path
