"""The evaluation input pipeline: every video of a split once, as all of its test views.

    source (in order) -> padded to a whole number of global batches -> this process's share ->
    decode the union of the views' frames once -> temporal x spatial views -> batch

Each element is {"frames": uint8 [V, T, S, S, 3], "label": int32, "index": int32 (position in
the split; -1 for padding), "name": uint8 [NAME_BYTES] (the video's id, UTF-8, zero-padded),
"error": uint8 [NAME_BYTES] (why the video could not be decoded; empty if it was)}. Everything is
numeric so that results can be gathered across processes without a shared file system.

A video that fails to decode is not dropped: it keeps its place with all-zero frames and its
error, and the evaluation counts it (accuracy with and without such videos). Padding elements
(index -1) make every process run the same number of steps; they are never counted.

The views follow VideoMAE's test protocol (`views.py`): `temporal_views` clips in time (windows of
`num_frames` at `stride`, or TSN segment starts / centres) times `spatial_views` crops of
size x size along the long side of the frame resized to short side `size`. One view each is the
single-view validation (the centre window or the segment centres, and the centre crop).
"""

from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np

from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import views as views_lib

NAME_BYTES = 256


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  num_frames: int = 16
  stride: int = 2
  sampling: str = "window"  # window | segments
  size: int = 224
  temporal_views: int = 1
  spatial_views: int = 1

  @property
  def num_views(self) -> int:
    return self.temporal_views * self.spatial_views


def encode_text(text: str) -> np.ndarray:
  """str -> uint8 [NAME_BYTES], UTF-8, truncated (at a character boundary) and zero-padded."""
  raw = text.encode("utf-8")[:NAME_BYTES].decode("utf-8", "ignore").encode("utf-8")
  out = np.zeros((NAME_BYTES,), np.uint8)
  out[:len(raw)] = np.frombuffer(raw, np.uint8)
  return out


def decode_text(codes: np.ndarray) -> str:
  return bytes(np.asarray(codes, np.uint8)).rstrip(b"\0").decode("utf-8", "replace")


def video_name(record: dict) -> str:
  """The id of a record in reports: its name (prepared shards) or its path without suffix."""
  if record.get("name"):
    return str(record["name"])
  return os.path.splitext(os.fspath(record["path"]))[0]


class LoadViews(grain.transforms.Map):
  """(position, record or None) -> one evaluation element (module docstring)."""

  def __init__(self, spec: EvalSpec):
    self.spec = spec

  def _empty(self) -> np.ndarray:
    s = self.spec
    return np.zeros((s.num_views, s.num_frames, s.size, s.size, 3), np.uint8)

  def map(self, item) -> dict:
    position, record = item
    if record is None:
      return {"frames": self._empty(), "label": np.int32(-1), "index": np.int32(-1),
              "name": encode_text(""), "error": encode_text("")}
    name = video_name(record)
    out = {"label": np.int32(record["label"]), "index": np.int32(position),
           "name": encode_text(name)}
    try:
      out["frames"] = self._views(record, name)
      out["error"] = encode_text("")
    except Exception as e:  # pylint: disable=broad-except
      # Any failure on one video is reported with it, never dropped and never fatal.
      reason = str(e) if isinstance(e, decode.VideoDecodeError) else f"{type(e).__name__}: {e}"
      out["frames"], out["error"] = self._empty(), encode_text(reason or type(e).__name__)
    return out

  def _views(self, record: dict, name: str) -> np.ndarray:
    s = self.spec
    source = record["video"] if "video" in record else record["path"]
    with decode.opened(source, name=name) as video:  # one open for the probe and the decode
      num = record.get("num_frames") or decode.probe(video).num_frames
      lists = views_lib.temporal_views(num, clip_len=s.num_frames, stride=s.stride,
                                       num_views=s.temporal_views,
                                       segments=s.sampling == "segments")
      union = views_lib.union_indices(lists)
      frames = decode.decode_frames(video, union, pad_short=True, name=name)
    clip = clip_lib.without_motion(frames, union, name)
    return views_lib.make_views(clip, lists, crop_size=s.size, num_spatial=s.spatial_views)


class _Positions:
  """Random-access (position, record) pairs of the `chosen` positions of `source`, padded with
  (-1, None) entries to `length`."""

  def __init__(self, source, chosen: np.ndarray, length: int):
    self._source, self._chosen, self._length = source, chosen, length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i: int):
    i = int(i)
    if i >= len(self._chosen):
      return (-1, None)
    position = int(self._chosen[i])
    return (position, self._source[position])


def make_eval_dataset(source, spec: EvalSpec, *, batch_size: int, num_videos: int = 0,
                      process_index: int = 0, process_count: int = 1,
                      num_threads: int = 4) -> tuple[grain.IterDataset, int]:
  """The per-process evaluation stream and its number of batches (the same on every process).

  `batch_size` counts videos per global batch (all processes); `num_videos` > 0 evaluates only
  that many videos, evenly spaced over the source (list files are often sorted by class: the
  first N would cover only the first classes). The positions reported are the source's.
  """
  if batch_size % process_count:
    raise ValueError(f"eval batch {batch_size} is not divisible by {process_count} processes")
  total = min(num_videos, len(source)) if num_videos > 0 else len(source)
  steps = max(-(-total // batch_size), 1)
  chosen = np.floor(np.arange(total) * (len(source) / total)).astype(np.int64)
  positions = _Positions(source, chosen, steps * batch_size)
  ds = grain.MapDataset.source(positions)[process_index::process_count].map(LoadViews(spec))
  per_process = batch_size // process_count
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(num_threads, 1),
                                            prefetch_buffer_size=2 * per_process))
  return it.batch(per_process, drop_remainder=False), steps
