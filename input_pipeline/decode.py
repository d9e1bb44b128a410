"""Decoding clips with PyAV: the sampled RGB frames plus the motion that goes with them.

`decode_clip` decodes only what a clip needs: it seeks to the keyframe at or before the first
frame needed (with codec vectors: the first sampled frame, as for RGB alone; its interval's motion
starts at that keyframe), decodes in display order up to the last sampled frame and converts only
the sampled frames to RGB. Motion comes from the codec's motion vectors (FFmpeg exports them while
decoding) or, for codecs without vectors, from luma frame differences read straight from the
decoded Y plane. `motion.py` has the conventions: signs, accumulation over the sampling stride,
filling frames without vectors (I-frames), the first sampled frame. `motion="flow"` computes dense
optical flow (`optical_flow.py`, OpenCV DIS) between the luma planes of consecutive sampled frames
instead: any codec, same conventions (`_flow_motion`).

Frame indices are 0-based in display order. The index of the first frame decoded after a seek
comes from its timestamp ((pts - stream start) x time base x frame rate, rounded); the following
frames are counted, so timestamp jitter cannot reorder or duplicate frames.

Every problem with the input raises `VideoDecodeError`, naming the file: missing, empty, garbage or
truncated files, FIFOs, devices and directories (rejected before opening: reading a FIFO blocks,
a device can be endless), no video stream, a codec FFmpeg cannot identify, frames past the end,
vectors forced on a codec without them. The public functions check their arguments first (a bad
argument is the caller's bug: ValueError / TypeError), then turn any other `Exception` raised while
reading that input, by PyAV, NumPy or the motion math (AttributeError, KeyError, MemoryError, ...),
into `VideoDecodeError` with the original as `__cause__`; KeyboardInterrupt and SystemExit pass.
Each video is decoded in one thread (`thread_count = 1`): frame threading made B-frame motion
vectors differ from run to run, and decoding must be deterministic; PyAV's default slice
threading starts a thread pool per open that prepared videos (one slice per frame) cannot use,
~8% more CPU per clip for the same output (checked bit for bit on H.264 with and without
B-frames, MPEG-4 and VP9). The input pipeline runs videos in parallel instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import io
import os
import stat
from typing import Iterator, Sequence

import av
from av.sidedata import motionvectors as av_motionvectors
from av.sidedata import sidedata as av_sidedata
from av.video import reformatter as av_reformatter
import numpy as np

from input_pipeline import clip as clip_lib
from input_pipeline import motion as motion_lib
from input_pipeline import optical_flow
from input_pipeline import yuv_frames

# FFmpeg decoders (`codec_context.name`) that export motion vectors (`flags2=+export_mvs`): the
# H.264 and mpegvideo-family decoders. MS-MPEG4 v3 ("DIV3", "MP43") decodes as `msmpeg4`.
VECTOR_CODECS = frozenset({
    "h264", "mpeg4", "mpeg1video", "mpeg2video", "h261", "h263", "h263p", "h263i", "flv",
    "msmpeg4v1", "msmpeg4v2", "msmpeg4", "wmv1", "wmv2",
})
# Codecs whose B-frames export all-zero vectors: such frames count as frames without vectors.
_ZERO_B_VECTOR_CODECS = frozenset({"mpeg4"})

MOTION_POLICIES = ("auto", "mv", "frame_diff", "flow")

_SideDataContainer = av_sidedata.SideDataContainer
_MotionVectors = av_motionvectors.MotionVectors

Source = str | os.PathLike | bytes


class VideoDecodeError(Exception):
  """The one error for unusable video input; `str()` names the file and the reason.

  Attributes:
    name: the file path or the label of the input.
    path: same as `name`.
    reason: what went wrong.
  """

  def __init__(self, name: str, reason: str):
    super().__init__(f"{name}: {reason}")
    self.name = name
    self.path = name
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What `probe` reports about a file's first video stream."""

  num_frames: int
  fps: float
  height: int
  width: int
  codec: str
  exports_vectors: bool


def _name_of(source: Source | Opened, name: str | None) -> str:
  if name is not None:
    return name
  if isinstance(source, Opened):
    return source.name
  if isinstance(source, (bytes, bytearray, memoryview)):
    return "<bytes>"
  return os.fspath(source)


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
  """Any `Exception` raised in the block (reading the input `name`) -> VideoDecodeError.

  Wraps all the work on one input after its arguments were checked: opening, decoding, and the
  frame and motion arrays made after the container is closed. BaseExceptions that are not
  Exceptions (KeyboardInterrupt, SystemExit) pass.
  """
  try:
    yield
  except VideoDecodeError:
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise VideoDecodeError(name, f"{type(e).__name__}: {e}") from e


_FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"),
               (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
               (stat.S_ISSOCK, "socket"))


def _check_file(path: str, name: str) -> None:
  """Rejects what is not a non-empty regular file before FFmpeg opens it (a FIFO would block)."""
  info = os.stat(path)  # follows links; a missing file raises FileNotFoundError
  if not stat.S_ISREG(info.st_mode):
    kind = next((k for test, k in _FILE_KINDS if test(info.st_mode)), "special file")
    raise VideoDecodeError(name, f"not a regular file ({kind})")
  if info.st_size == 0:
    raise VideoDecodeError(name, "empty file")


def _codec_name(stream: av.video.stream.VideoStream, name: str) -> str:
  context = stream.codec_context
  if context is None:  # FFmpeg could not identify the codec (e.g. an unknown sample entry)
    raise VideoDecodeError(name, "unknown codec: FFmpeg has no decoder for the video stream")
  return context.name


@contextlib.contextmanager
def _open_video(source: Source | Opened, name: str) -> Iterator[
    tuple[av.container.InputContainer, av.video.stream.VideoStream, str]]:
  """Yields (container, first video stream, its decoder's name); call it inside `_reading`.

  An `Opened` video hands over its container the first time (it stays open until `opened`
  exits); later calls open its source again.
  """
  if isinstance(source, Opened):
    handle = source.take()
    if handle is not None:
      yield handle
      return
    source = source.source
  if isinstance(source, (bytes, bytearray, memoryview)):
    if len(source) == 0:
      raise VideoDecodeError(name, "empty input")
    file = io.BytesIO(bytes(source))
  else:
    file = os.fspath(source)
    _check_file(file, name)
  with av.open(file, mode="r") as container:
    if not container.streams.video:
      raise VideoDecodeError(name, "no video stream")
    stream = container.streams.video[0]
    codec = _codec_name(stream, name)
    stream.codec_context.thread_count = 1  # see the module docstring
    yield container, stream, codec


def _frame_rate(stream: av.video.stream.VideoStream) -> fractions.Fraction | None:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate is not None and rate > 0:
      return fractions.Fraction(rate)
  return None


@dataclasses.dataclass(frozen=True)
class _Clock:
  """Maps timestamps to 0-based frame indices (display order) and back."""

  start: int  # pts of frame 0
  time_base: fractions.Fraction | None
  rate: fractions.Fraction | None

  @classmethod
  def of(cls, stream: av.video.stream.VideoStream) -> _Clock:
    start = stream.start_time if stream.start_time is not None else 0
    time_base = fractions.Fraction(stream.time_base) if stream.time_base else None
    return cls(start=start, time_base=time_base, rate=_frame_rate(stream))

  @property
  def usable(self) -> bool:
    return self.time_base is not None and self.rate is not None

  def index(self, pts: int | None) -> int | None:
    if pts is None or not self.usable:
      return None
    return round((pts - self.start) * self.time_base * self.rate)

  def pts(self, index: int) -> int:
    return self.start + int(index / (self.rate * self.time_base))


def probe(source: Source | Opened, name: str | None = None) -> VideoInfo:
  """Reads a video's frame count, rate, size and codec (counting packets if the header has none).

  Of an `Opened` video it reads the open container's header, which a decode then still uses
  (unless the packets had to be counted: the decode then opens the source again).

  Raises:
    VideoDecodeError: the input is not a readable video.
  """
  name = _name_of(source, name)
  with _reading(name):
    if isinstance(source, Opened) and source.handle is not None:
      container, stream, codec = source.handle
      if not stream.frames:
        source.take()  # counting reads the packets: a decode must start afresh
      return _info(container, stream, codec, name)
    with _open_video(source, name) as (container, stream, codec):
      return _info(container, stream, codec, name)


def _info(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
          codec: str, name: str) -> VideoInfo:
  height, width = stream.codec_context.height, stream.codec_context.width
  if height <= 0 or width <= 0:
    raise VideoDecodeError(name, f"the video stream has no frame size ({width}x{height})")
  num_frames = stream.frames
  if not num_frames:
    num_frames = sum(1 for packet in container.demux(stream) if packet.size)
  if num_frames <= 0:
    raise VideoDecodeError(name, "no frames")
  rate = _frame_rate(stream)
  return VideoInfo(num_frames=int(num_frames), fps=float(rate) if rate else 0.0,
                   height=height, width=width, codec=codec,
                   exports_vectors=codec in VECTOR_CODECS)


class Opened:
  """A video opened once by `opened`: `probe` reads its header, the first decode reuses it.

  Attributes:
    source: what was opened (a path or bytes).
    name: its label in errors.
    handle: (container, stream, decoder name) until a decode takes it, then None.
  """

  def __init__(self, source: Source, name: str, handle):
    self.source, self.name, self.handle = source, name, handle

  def take(self):
    handle, self.handle = self.handle, None
    return handle


@contextlib.contextmanager
def opened(source: Source, name: str | None = None) -> Iterator[Opened]:
  """Opens a video for a `probe` and a decode (`decode_clip`, `decode_frames`) that share one
  open: the input pipeline's first epoch otherwise opens every file twice (~4 ms of ~55).

  Raises:
    VideoDecodeError: the input cannot be opened (errors in the block pass unchanged).
  """
  name = _name_of(source, name)
  with contextlib.ExitStack() as stack:
    with _reading(name):
      handle = stack.enter_context(_open_video(source, name))
    video = Opened(source, name, handle)
    try:
      yield video
    finally:
      video.handle = None  # closed below: a later use opens the source again


@dataclasses.dataclass
class _Window:
  """What one decoding pass collected for the frames `start`, `start + 1`, ..., `last_seen`."""

  start: int
  motion_source: str | None
  codec: str
  clock: _Clock
  rgb: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
  vector_bytes: bytearray = dataclasses.field(default_factory=bytearray)  # back to back
  vector_counts: list[int] = dataclasses.field(default_factory=list)  # per window frame
  luma_diff: list[np.ndarray | None] = dataclasses.field(default_factory=list)
  luma_at: frozenset[int] = frozenset()  # frames whose luma plane to keep (optical flow)
  luma: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)  # uint8 [H, W] copies
  packet_pts: list[int | None] = dataclasses.field(default_factory=list)  # in decoding order
  pts_index: dict[int, int] = dataclasses.field(default_factory=dict)  # frame pts -> index
  index_offset: int = 0  # frame index - clock index (0 unless counting from the first frame)
  height: int = 0
  width: int = 0
  last_seen: int = -1  # the last frame decoded; the video's last frame if `at_end`
  last_rgb: np.ndarray | None = None  # RGB of the video's last frame, if `at_end`
  at_end: bool = False
  keep_yuv: bool = False  # `rgb` and `last_rgb` hold the decoded pictures, not RGB arrays

  @property
  def frame_ids(self) -> np.ndarray:
    """int64 [F]: indices of the window's frames."""
    return np.arange(self.start, max(self.last_seen + 1, self.start), dtype=np.int64)

  def frame_vectors(self) -> motion_lib.FrameVectors:
    """The window's motion vectors (no copy)."""
    vectors = np.frombuffer(self.vector_bytes, motion_lib.MOTION_VECTOR_DTYPE)
    return motion_lib.FrameVectors(vectors, np.asarray(self.vector_counts, np.int64))

  def decoding_order(self) -> np.ndarray:
    """int64 [P]: frame index of each packet decoded, in decoding order (-1 if unknown)."""
    order = []
    for pts in self.packet_pts:
      index = self.pts_index.get(pts)
      if index is None:
        index = self.clock.index(pts)
        index = -1 if index is None else index + self.index_offset
      order.append(index)
    return np.asarray(order, np.int64)


class _SeekOvershot(Exception):
  """The first frame after a seek was later than the frame the seek aimed at."""


def _read_vectors(frame: av.VideoFrame, buffer: bytearray) -> int:
  """Appends the frame's motion vectors to `buffer`; returns how many there were.

  `frame.side_data` caches a container that points back to the frame: a reference cycle, so the
  frame (and its pixel buffers) would wait for the garbage collector instead of going back to
  FFmpeg's buffer pool at once. That made decoding with vectors ~10% slower. A container of our
  own, dropped on return, keeps frames acyclic.
  """
  for data in _SideDataContainer(frame):  # usually empty (I-frames) or just the vectors
    if isinstance(data, _MotionVectors):  # (cheaper than a lookup by type name)
      buffer += data
      return len(data)
  return 0


def _luma(frame: av.VideoFrame) -> np.ndarray:
  """uint8 [H, W] view of the frame's Y plane (no copy: valid while `frame` lives)."""
  plane = frame.planes[0]
  rows = np.frombuffer(plane, np.uint8)[: plane.line_size * frame.height]
  return rows.reshape(frame.height, plane.line_size)[:, : frame.width]


# Pixel formats whose first plane is the 8-bit luma (`_luma` reads it in place).
_LUMA8_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                            "yuv411p", "yuv410p", "yuv440p", "yuvj440p", "nv12", "nv21", "gray"})


def _luma_copy(frame: av.VideoFrame) -> np.ndarray:
  """uint8 [H, W]: a copy of the frame's luma (converted for other formats, e.g. 10-bit)."""
  if frame.format.name in _LUMA8_FORMATS:
    return _luma(frame).copy()
  return frame.to_ndarray(format="gray")


def _decode_pass(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    win: _Window,
    sampled: Sequence[int],
    allow_seek: bool,
    last: int | None = None,
) -> _Window:
  """Decodes frames [win.start, last] (default max(sampled); fewer if the video ends first) into
  `win`.

  Collects the RGB of the `sampled` frames (with `win.keep_yuv`, their decoded pictures) and, for
  every frame of the window, its motion vectors or its per-cell luma difference to the previous
  frame, as `win.motion_source` asks, and a copy of the luma plane of each frame in `win.luma_at`
  (optical flow; these may precede the window). With vectors, `win.start` moves up to the
  keyframe at or before the first sampled frame if that is later.
  RGB conversion reuses one converter for the pass (`frame.to_ndarray(format=...)` builds a new
  one per frame): the same pixels, ~8% less CPU per clip.
  """
  converter = av_reformatter.VideoReformatter()

  def keep(frame: av.VideoFrame):  # what `win.rgb` holds of a sampled frame
    return frame if win.keep_yuv else yuv_frames.to_rgb(converter, frame)

  clock = win.clock
  last = int(max(sampled)) if last is None else int(last)
  wanted = set(int(i) for i in sampled)
  want_vectors = win.motion_source == clip_lib.MOTION_FROM_VECTORS
  want_luma = win.motion_source == clip_lib.MOTION_FROM_FRAME_DIFF
  seek_to = max(win.start - 1 if want_luma else win.start, 0)  # luma needs the frame before
  # Codec vectors: the window does not reach back past the keyframe at or before the first
  # sampled frame (`motion.py`, "Intervals"): seek to that frame, and start the window again at
  # a keyframe found on the way (the same rule with and without a seek).
  first = int(min(sampled)) if want_vectors else -1
  seek_to = max(seek_to, first)
  seek_to = max(min(seek_to, min(win.luma_at, default=seek_to)), 0)
  seeked = allow_seek and seek_to > 0 and clock.usable
  if seeked:
    container.seek(clock.pts(seek_to), stream=stream, backward=True, any_frame=False)
  frame, previous, index = None, None, -1
  for packet in container.demux(stream):
    if packet.size:
      win.packet_pts.append(packet.pts)
    for frame in packet.decode():
      if index < 0 and seeked:  # first frame after a seek: its timestamp gives its index
        index = clock.index(frame.pts)
        if index is None or index > seek_to:
          raise _SeekOvershot()
        index = max(index, 0)
        if want_vectors and index > win.start:  # (a seek lands on a keyframe)
          win.start = index
      else:
        index += 1
        if index == 0:
          win.index_offset = -(clock.index(frame.pts) or 0)
      if frame.pts is not None:
        win.pts_index[frame.pts] = index
      win.last_seen = index
      if index in win.luma_at:
        win.luma[index] = _luma_copy(frame)
      if want_vectors and win.start < index <= first and frame.key_frame:
        win.start = index  # drop the motion of the frames before this keyframe
        win.vector_counts.clear()
        win.vector_bytes.clear()
      if index >= win.start:
        if want_vectors:
          win.vector_counts.append(_read_vectors(frame, win.vector_bytes))
        elif want_luma:
          win.luma_diff.append(None if previous is None else
                               motion_lib.luma_absdiff_cells(_luma(previous), _luma(frame)))
        if index in wanted:
          win.rgb[index] = keep(frame)
        if index >= last:
          win.height, win.width = frame.height, frame.width
          return win
      previous = frame
  win.at_end = True
  if frame is not None:
    win.height, win.width = frame.height, frame.width
    win.last_rgb = win.rgb.get(index)
    if win.last_rgb is None:
      win.last_rgb = keep(frame)
  return win


def _decode(source: Source | Opened, name: str, *, window_start: int, sampled: Sequence[int],
            policy: str | None, allow_seek: bool = True, last: int | None = None,
            luma_at: frozenset[int] = frozenset(), keep_yuv: bool = False) -> _Window:
  """Opens the input and decodes one window.

  Args:
    source: the input.
    name: for errors.
    window_start: first frame whose motion is needed.
    sampled: the frames to convert to RGB.
    policy: None (no motion), "mv", "frame_diff", "flow" or "auto" (vectors if the codec has
      them).
    allow_seek: False decodes from the first frame (the fallback when a seek misses).
    last: the last frame to decode (default: the last sampled one).
    luma_at: frames whose luma planes to keep (`_Window.luma`), for optical flow.
    keep_yuv: keep the sampled frames as decoded pictures (`yuv_frames.YuvFrames`).
  """
  with _open_video(source, name) as (container, stream, codec):
    if policy == "auto":
      policy = (clip_lib.MOTION_FROM_VECTORS if codec in VECTOR_CODECS
                else clip_lib.MOTION_FROM_FRAME_DIFF)
    if policy == clip_lib.MOTION_FROM_VECTORS:
      if codec not in VECTOR_CODECS:
        raise VideoDecodeError(name, f"codec {codec!r} exports no motion vectors")
      stream.codec_context.options = {"flags2": "+export_mvs"}
    win = _Window(start=window_start, motion_source=policy, codec=codec,
                  clock=_Clock.of(stream), luma_at=luma_at, keep_yuv=keep_yuv)
    try:
      return _decode_pass(container, stream, win, sampled, allow_seek, last)
    except _SeekOvershot:
      pass
  return _decode(source, name, window_start=window_start, sampled=sampled, policy=policy,
                 allow_seek=False, last=last, luma_at=luma_at, keep_yuv=keep_yuv)


def _check_indices(frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
  indices = np.asarray(frame_indices, np.int64).reshape(-1)
  if indices.size == 0:
    raise ValueError("frame_indices is empty")
  if indices[0] < 0 or np.any(np.diff(indices) < 0):
    raise ValueError(f"frame_indices must be sorted and >= 0, got {indices.tolist()}")
  return indices


def _check_available(win: _Window, indices: np.ndarray, pad_short: bool, name: str) -> int:
  """Number of requested frames the video has; raises unless `pad_short` covers the rest."""
  available = win.last_seen + 1 if win.at_end else None
  if available is None:
    return indices.size
  if available <= 0:
    raise VideoDecodeError(name, "no decodable frames")
  num_ok = int(np.searchsorted(indices, available))
  if num_ok < indices.size and not pad_short:
    raise VideoDecodeError(
        name, f"requested frame {int(indices[num_ok])} but the video has only {available} frames")
  return num_ok


def _frames(win: _Window, indices: np.ndarray,
            num_ok: int) -> np.ndarray | yuv_frames.YuvFrames:
  """uint8 [T, H, W, 3] (or its `YuvFrames` with `keep_yuv`): the sampled frames, the last frame
  repeated past the end."""
  frames = [win.rgb[int(i)] for i in indices[:num_ok]]
  frames += [win.last_rgb] * (indices.size - num_ok)
  return yuv_frames.YuvFrames(frames) if win.keep_yuv else np.stack(frames)


def decode_frames(
    source: Source | Opened,
    frame_indices: Sequence[int] | np.ndarray,
    *,
    pad_short: bool = False,
    name: str | None = None,
    keep_yuv: bool = False,
) -> np.ndarray | yuv_frames.YuvFrames:
  """Decodes only the RGB frames at `frame_indices` (no motion), e.g. for evaluation.

  Args:
    source: a path, the file's bytes, or an `Opened` video.
    frame_indices: sorted 0-based display-order indices.
    pad_short: repeat the last frame for indices past the end instead of raising.
    name: label for errors (default: the path).
    keep_yuv: return the decoded pictures as `yuv_frames.YuvFrames` (converted to RGB when
      cropped: the input pipeline's fast path).

  Returns:
    uint8 [T, H, W, 3], or its `YuvFrames`.

  Raises:
    VideoDecodeError: unusable input or frames past the end (without pad_short).
  """
  name = _name_of(source, name)
  indices = _check_indices(frame_indices)
  with _reading(name):
    win = _decode(source, name, window_start=int(indices[0]), sampled=indices, policy=None,
                  keep_yuv=keep_yuv)
    num_ok = _check_available(win, indices, pad_short, name)
    return _frames(win, indices, num_ok)


def _reference_distances(win: _Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Estimates each window frame's reference distances from the decoding order.

  FFmpeg exports only whether a vector points to the past or the future. The estimate: the past
  (future) reference of a frame is the nearest earlier (later) frame in display order that was
  decoded before it. Exact without B-frames and one reference frame (distance 1), and for the
  usual B-frame layouts (incl. B-pyramids) when the nearest possible reference is used.

  Returns:
    past, future: float32 [F] distances in frames (1 where unknown).
    b_like: bool [F], frames decoded after a frame that follows them in display order.
  """
  ids = win.frame_ids
  num = ids.size
  past = np.ones(num, np.float32)
  future = np.ones(num, np.float32)
  pts = [p for p in win.packet_pts if p is not None]
  if all(a < b for a, b in zip(pts, pts[1:])):
    return past, future, np.zeros(num, bool)  # decoding order = display order
  order = win.decoding_order()
  position = {int(f): p for p, f in enumerate(order) if f >= 0}
  pos = np.array([position.get(int(f), -1) for f in ids])
  before = np.arange(order.size)[None, :] < pos[:, None]  # [F, P]: decoded before frame f
  known = before & (order[None, :] >= 0)
  earlier = known & (order[None, :] < ids[:, None])
  later = known & (order[None, :] > ids[:, None])
  nearest_past = np.where(earlier, order[None, :], -1).max(axis=1, initial=-1)
  big = np.iinfo(np.int64).max
  nearest_future = np.where(later, order[None, :], big).min(axis=1, initial=big)
  ok_past = (nearest_past >= 0) & (pos >= 0)
  ok_future = (nearest_future < big) & (pos >= 0)
  past[ok_past] = (ids - nearest_past)[ok_past]
  future[ok_future] = (nearest_future - ids)[ok_future]
  b_like = ok_future  # a later frame was decoded first: it can be a future reference
  return past, future, b_like


def _window_motion(win: _Window, sampled: np.ndarray, first_gap: int, compensate_camera: bool,
                   flow_frames: np.ndarray | None = None):
  """(flow or None, magnitude, has_vectors, frame flow or None, its validity) for the sampled
  frames inside the window, and the own flow of each of `flow_frames` (vectors only)."""
  ids = win.frame_ids
  gh, gw = motion_lib.grid_shape(win.height, win.width)
  if win.motion_source == clip_lib.MOTION_FROM_VECTORS:
    vectors = win.frame_vectors()
    past, future, b_like = _reference_distances(win)
    if win.codec in _ZERO_B_VECTOR_CODECS and b_like.any():
      vectors = vectors.without(b_like)
    # The clip's motion reads only frames up to its last sampled one, also when the window
    # runs on for `flow_frames`: its masks must not depend on which targets are on.
    in_clip = ids <= sampled[-1]
    weights, has_vectors = motion_lib.interval_weights(ids, sampled,
                                                       vectors.has_vectors & in_clip,
                                                       first_gap=first_gap)
    frame_valid = None
    if flow_frames is not None:  # one-hot rows: a frame's own field (zero where it has none)
      column = flow_frames - win.start
      inside = (column >= 0) & (column < ids.size)
      frame_valid = np.zeros(flow_frames.size, bool)
      frame_valid[inside] = vectors.has_vectors[column[inside]]
      own = np.zeros((flow_frames.size, ids.size), np.float32)
      own[np.flatnonzero(frame_valid), column[frame_valid]] = 1.0
      weights = np.concatenate([weights, own])
    result = motion_lib.vectors_to_flow(vectors, weights, win.height, win.width,
                                        past_distance=past, future_distance=future,
                                        with_coverage=compensate_camera)
    flow, coverage = result if compensate_camera else (result, None)
    frame_flow = None
    if flow_frames is not None:
      flow, frame_flow = flow[:sampled.size], flow[sampled.size:]
      coverage = None if coverage is None else coverage[:sampled.size]
    return (flow, motion_lib.magnitude(flow, compensate_camera, coverage), has_vectors,
            frame_flow, frame_valid)
  valid = np.array([d is not None for d in win.luma_diff], bool) & (ids <= sampled[-1])
  weights, _ = motion_lib.interval_weights(ids, sampled, valid, first_gap=first_gap)
  zero = np.zeros((gh, gw), np.float32)
  per_frame = np.stack([zero if d is None else d for d in win.luma_diff]) if ids.size else (
      np.zeros((0, gh, gw), np.float32))
  magnitude = motion_lib.accumulate(per_frame, weights)
  return None, magnitude, np.zeros(sampled.size, bool), None, None


def _flow_luma_frames(indices: np.ndarray, first_gap: int,
                      flow_frames: np.ndarray | None) -> frozenset[int]:
  """The frames whose luma `_flow_motion` reads: the sampled ones, the frame before the first
  interval, and each of `flow_frames` with its previous frame."""
  frames = {max(int(indices[0]) - first_gap, 0), *(int(i) for i in indices)}
  if flow_frames is not None:
    frames.update(int(k) for k in flow_frames)
    frames.update(int(k) - 1 for k in flow_frames if k > 0)
  return frozenset(frames)


def _flow_motion(win: _Window, sampled: np.ndarray, first_gap: int, compensate_camera: bool,
                 flow_frames: np.ndarray | None, preset: str):
  """`_window_motion` for optical flow: the same five results, from `win.luma`.

  Sampled frame i_t's flow is the optical flow from the previous sampled frame (for t = 0: frame
  max(i_0 - first_gap, 0)) to i_t, divided by the gap: the mean per-frame motion over
  (i_{t-1}, i_t], as the vectors' accumulation; has_vectors True. A repeated index takes the
  motion of its first occurrence. A clip starting at frame 0 has no earlier frame: its leading
  slots take the first computed slot's flow (the fill rule of `motion.py`), has_vectors False;
  zero if none was computed. `flow_frames` get each frame's own flow from its previous frame
  (valid where both were decoded). Each pair of frames is computed once.
  """
  gh, gw = motion_lib.grid_shape(win.height, win.width)
  cache: dict[tuple[int, int], np.ndarray] = {}

  def pair(earlier: int, current: int) -> np.ndarray:
    if (earlier, current) not in cache:
      cache[earlier, current] = optical_flow.grid_flow(
          win.luma[earlier], win.luma[current], current - earlier, preset=preset)
    return cache[earlier, current]

  num = sampled.size
  flow = np.zeros((num, gh, gw, 2), np.float32)
  has_flow = np.zeros(num, bool)
  earlier = np.concatenate([[max(int(sampled[0]) - first_gap, 0)], sampled[:-1]])
  for t, (e, i) in enumerate(zip(earlier.tolist(), sampled.tolist())):
    if e < i:
      flow[t], has_flow[t] = pair(e, i), True
    elif t:  # a repeated frame
      flow[t], has_flow[t] = flow[t - 1], has_flow[t - 1]
  computed = np.flatnonzero(has_flow)
  if computed.size and computed[0] > 0:
    flow[:computed[0]] = flow[computed[0]]
  frame_flow = frame_valid = None
  if flow_frames is not None:
    frame_flow = np.zeros((flow_frames.size, gh, gw, 2), np.float32)
    frame_valid = np.array([k > 0 and k in win.luma and k - 1 in win.luma
                            for k in flow_frames.tolist()], bool)
    for row in np.flatnonzero(frame_valid):
      k = int(flow_frames[row])
      frame_flow[row] = pair(k - 1, k)
  return (flow, motion_lib.magnitude(flow, compensate_camera), has_flow, frame_flow,
          frame_valid)


def decode_clip(
    source: Source | Opened,
    frame_indices: Sequence[int] | np.ndarray,
    *,
    motion: str = "auto",
    compensate_camera: bool = False,
    pad_short: bool = False,
    name: str | None = None,
    extra_indices: Sequence[int] | np.ndarray | None = None,
    flow_indices: Sequence[int] | np.ndarray | None = None,
    flow_preset: str = optical_flow.DEFAULT_PRESET,
    keep_yuv: bool = False,
) -> clip_lib.Clip:
  """Decodes the sampled frames of a video and the motion at each of them.

  Args:
    source: a path, the file's bytes, or an `Opened` video.
    frame_indices: sorted 0-based display-order indices (repeats allowed).
    motion: "mv" = codec motion vectors (VideoDecodeError if the codec has none); "frame_diff" =
      mean absolute luma difference; "auto" = vectors if the codec exports them and the decoded
      window contained any (else frame differences, decoding the window again); "flow" = dense
      optical flow between consecutive sampled frames (`_flow_motion`; any codec, needs OpenCV).
    compensate_camera: subtract each frame's camera motion (a robust affine fit,
      `motion.fit_camera_motion`) before the magnitude (vectors and optical flow; frame
      differences carry no direction to compensate).
    pad_short: indices past the end repeat the last frame with zero motion (has_vectors False)
      instead of raising.
    name: label for errors and `Clip.name` (default: the path).
    extra_indices: further frames (>= the first sampled frame, any order) to convert to RGB:
      `Clip.extra_frames`.
      Past the end (with pad_short) they repeat the last frame.
    flow_indices: frames (>= the first sampled frame) whose own flow `Clip.frame_flow` holds
      (codec vectors or optical flow from the previous frame; with frame differences it stays
      None). Decoding runs on to the last of all the frames asked for.
    flow_preset: the OpenCV DIS preset for motion="flow" (`optical_flow.PRESETS`).
    keep_yuv: `Clip.frames` and `Clip.extra_frames` stay the decoded pictures
      (`yuv_frames.YuvFrames`), converted to RGB when cropped (`transforms.crop_resize`: the
      input pipeline's fast path), both resampled alike.

  Returns:
    A checked `clip.Clip`.

  Raises:
    VideoDecodeError: unusable input, frames past the end (without pad_short), or motion="mv"
      for a codec without vectors.
  """
  if motion not in MOTION_POLICIES:
    raise ValueError(f"motion must be one of {MOTION_POLICIES}, got {motion!r}")
  if flow_preset not in optical_flow.PRESETS:
    raise ValueError(f"flow_preset must be one of {sorted(optical_flow.PRESETS)}, got "
                     f"{flow_preset!r}")
  if motion == clip_lib.MOTION_FROM_FLOW:
    optical_flow.require_opencv()  # a missing package is not a broken video: raised unwrapped
  name = _name_of(source, name)
  indices = _check_indices(frame_indices)
  extra = _check_extra(extra_indices, "extra_indices", int(indices[0]))
  flow_at = _check_extra(flow_indices, "flow_indices", int(indices[0]))
  with _reading(name):
    return _clip(source, name, indices, motion, compensate_camera, pad_short, extra, flow_at,
                 flow_preset, keep_yuv)


def _check_extra(indices, field: str, minimum: int) -> np.ndarray | None:
  if indices is None:
    return None
  indices = np.asarray(indices, np.int64).reshape(-1)
  if indices.size and indices.min() < minimum:
    raise ValueError(f"{field} must be >= {minimum}, got {indices.tolist()}")
  return indices


def _clip(source: Source | Opened, name: str, indices: np.ndarray, motion: str,
          compensate_camera: bool, pad_short: bool, extra: np.ndarray | None = None,
          flow_at: np.ndarray | None = None,
          flow_preset: str = optical_flow.DEFAULT_PRESET,
          keep_yuv: bool = False) -> clip_lib.Clip:
  """`decode_clip` after its arguments were checked."""
  first_gap = max(int(indices[1] - indices[0]), 1) if indices.size > 1 else 1
  window_start = max(int(indices[0]) - first_gap + 1, 0)
  rgb = indices if extra is None else np.union1d(indices, extra)
  last = int(max(rgb.max(), -1 if flow_at is None or not flow_at.size else flow_at.max()))
  luma_at = (_flow_luma_frames(indices, first_gap, flow_at)
             if motion == clip_lib.MOTION_FROM_FLOW else frozenset())
  win = _decode(source, name, window_start=window_start, sampled=rgb, policy=motion, last=last,
                luma_at=luma_at, keep_yuv=keep_yuv)
  if (motion == "auto" and win.motion_source == clip_lib.MOTION_FROM_VECTORS
      and not any(win.vector_counts[:int(indices[-1]) - win.start + 1])):
    win = _decode(source, name, window_start=window_start, sampled=rgb,
                  policy=clip_lib.MOTION_FROM_FRAME_DIFF, last=last, keep_yuv=keep_yuv)
  num_ok = _check_available(win, indices, pad_short, name)
  if extra is not None:
    _check_available(win, np.sort(extra), pad_short, name)
  frames = _frames(win, indices, num_ok)
  gh, gw = motion_lib.grid_shape(frames.shape[1], frames.shape[2])
  num = indices.size
  magnitude = np.zeros((num, gh, gw), np.float32)
  flow = (np.zeros((num, gh, gw, 2), np.float32) if win.motion_source in (
      clip_lib.MOTION_FROM_VECTORS, clip_lib.MOTION_FROM_FLOW) else None)
  has_vectors = np.zeros(num, bool)
  with_flow = flow is not None and flow_at is not None
  frame_flow = np.zeros((flow_at.size, gh, gw, 2), np.float32) if with_flow else None
  frame_valid = np.zeros(flow_at.size, bool) if with_flow else None
  if num_ok:
    if win.motion_source == clip_lib.MOTION_FROM_FLOW:
      motion_of = _flow_motion(win, indices[:num_ok], first_gap, compensate_camera,
                               flow_at if with_flow else None, flow_preset)
    else:
      motion_of = _window_motion(win, indices[:num_ok], first_gap, compensate_camera,
                                 flow_at if with_flow else None)
    ok_flow, ok_magnitude, ok_has, ok_frame_flow, ok_valid = motion_of
    magnitude[:num_ok] = ok_magnitude
    has_vectors[:num_ok] = ok_has
    if flow is not None:
      flow[:num_ok] = ok_flow
    if with_flow:
      frame_flow[:], frame_valid[:] = ok_frame_flow, ok_valid
  extra_frames = None
  if extra is not None:
    picked = [win.rgb.get(int(i), win.last_rgb) for i in extra]
    if not picked:
      extra_frames = np.zeros((0, *frames.shape[1:]), np.uint8)
    else:
      extra_frames = yuv_frames.YuvFrames(picked) if keep_yuv else np.stack(picked)
  result = clip_lib.Clip(frames=frames, flow=flow, magnitude=magnitude, has_vectors=has_vectors,
                         motion_source=win.motion_source, frame_indices=indices, name=name,
                         extra_frames=extra_frames, extra_indices=extra,
                         frame_flow=frame_flow, frame_flow_indices=flow_at if with_flow else None,
                         frame_flow_valid=frame_valid)
  result.check()
  return result
