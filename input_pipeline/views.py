"""Evaluation views: VideoMAE's multi-view test protocol (temporal x spatial), pure NumPy.

Read in MCG-NJU/VideoMAE (its snapshot keeps the data sets at the top level, not in datasets/):
`kinetics.py` (VideoClsDataset, modes "test" and "validation"), `ssv2.py` (SSVideoClsDataset),
`functional.py` (resize_clip, get_resize_sizes), `video_transforms.py` (Resize, CenterCrop),
`datasets.py` (build_dataset), `run_class_finetuning.py` and `scripts/*/finetune.sh` (the view
counts), `engine_for_finetuning.py` (final_test, merge, compute_video).

The protocol. A video is scored on T temporal x S spatial views, enumerated temporal-major
(view = t * S + s): Kinetics-400 5 x 3, Something-Something v2 2 x 3 (`--test_num_segment`,
`--test_num_crop`; both with `--short_side_size 224 --input_size 224`).

* Temporal, Kinetics style (`temporal_views(..., segments=False)`): the grid of all frames 0,
  stride, 2 stride, ... below the video's length, padded with its last entry up to clip_len
  entries. With L grid entries, step = max((L - clip_len) / (T - 1), 0) and view i is the
  clip_len consecutive grid entries from int(i * step).
* Temporal, TSN style (`segments=True`, clip_len = the number of segments): tick = frames /
  clip_len; segment k's start is int(tick * k) and its centre int(tick * k + tick / 2). VideoMAE
  sorts the starts and centres together and keeps every second one from offset t; as start_k <=
  centre_k <= start_{k+1}, view 0 holds the starts and view 1 the centres.
* Spatial (`spatial_boxes`): the short side is resized to short_side_size (= crop_size here), the
  long side to int(crop * long / short); then S crops of crop x crop at int(s * step) along the
  long side, step = (resized_long - crop) / (S - 1), each spanning the whole short side (a
  portrait or square frame is cut along its height). A square frame gives S identical crops.
* Scores (`merge_scores`): softmax of each view's logits, mean over the views; top-1 / top-5 are
  read from that mean.

Deliberate differences:

* View counts VideoMAE cannot handle (it divides by T - 1 and S - 1, and its SSv2 loader builds
  views of the wrong length for T > 2) are defined here. Kinetics style, T = 1: the window from
  (L - clip_len) // 2, the middle view of any odd T. TSN style, T = 1: the centres (also what
  single-view validation should use); T >= 2: view v takes int(tick * k + tick * v / T), v / T of
  the way into each segment, which is VideoMAE's starts and centres for T = 2. Spatial, S = 1:
  the crop at (resized_long - crop) // 2, the middle crop of any odd S (VideoMAE's validation
  CenterCrop rounds half to even instead, so it can sit one resized pixel further).
* VideoMAE's "validation" mode samples frames at random (the training loaders); single-view
  validation here is deterministic: the T = 1 views above with the S = 1 crop.
* One resampling step: each box is returned in SOURCE pixels and `transforms.crop_resize` cuts
  and resizes it at once. The box maps the resized crop back with each axis' own scale (long /
  resized_long and short / crop: VideoMAE's int() makes its resize slightly anisotropic), so the
  output samples the source at exactly the positions of resize-then-crop. What differs is
  rounding: no intermediate uint8 image (at most one grey level apart in our checks). Frames
  are resampled with PIL's bilinear filter, antialiased when shrinking; VideoMAE's test resize
  is cv2 INTER_LINEAR on the decoded arrays (no antialiasing), so downscaled views differ by
  the filter.
* short_side_size and crop_size are one size. (In VideoMAE's test mode the crop is
  short_side_size wide and crop_size is unused; its configs set both to 224.)
* VideoMAE's merge drops a repeated (temporal, spatial) pair that distributed padding produced;
  `merge_scores` averages exactly the rows it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from input_pipeline import clip as clip_lib
from input_pipeline import transforms

Box = tuple[float, float, float, float]  # (top, left, height, width) in source pixels


@dataclasses.dataclass(frozen=True, eq=False)
class View:
  """One evaluation view of a video.

  Attributes:
    frame_indices: int64 [clip_len], 0-based indices into the video's frames (read-only).
    temporal_index: which temporal view (VideoMAE's chunk_nb).
    spatial_index: which spatial crop (VideoMAE's split_nb).
  """

  frame_indices: np.ndarray
  temporal_index: int
  spatial_index: int

  def __post_init__(self):
    indices = np.array(self.frame_indices, dtype=np.int64)
    if indices.ndim != 1:
      raise ValueError(f"frame_indices must be 1-D, got shape {indices.shape}")
    indices.setflags(write=False)
    object.__setattr__(self, "frame_indices", indices)


def _check_positive(**values: int) -> None:
  for name, value in values.items():
    if value <= 0:
      raise ValueError(f"{name} must be > 0, got {value}")


def temporal_views(num_video_frames: int, *, clip_len: int, stride: int, num_views: int,
                   segments: bool) -> list[np.ndarray]:
  """The frame indices of each temporal view, in VideoMAE's order (module docstring).

  Args:
    num_video_frames: frames in the video (> 0).
    clip_len: frames per view (for segments=True: the number of segments).
    stride: gap between frames of a Kinetics-style view (>= 1); ignored for segments=True.
    num_views: temporal views (> 0).
    segments: TSN segment sampling (SSv2) instead of a strided window (Kinetics).

  Returns:
    num_views int64 arrays [clip_len], non-decreasing, all in [0, num_video_frames).
  """
  _check_positive(num_video_frames=num_video_frames, clip_len=clip_len, num_views=num_views)
  if segments:
    tick = num_video_frames / clip_len
    k = np.arange(clip_len)
    if num_views == 1:
      offsets = [tick / 2]
    else:
      offsets = [tick * v / num_views for v in range(num_views)]
    views = [np.floor(tick * k + offset).astype(np.int64) for offset in offsets]
    return [np.minimum(v, num_video_frames - 1) for v in views]
  if stride < 1:
    raise ValueError(f"stride must be >= 1, got {stride}")
  grid = np.arange(0, num_video_frames, stride, dtype=np.int64)
  if len(grid) < clip_len:
    grid = np.concatenate([grid, np.full(clip_len - len(grid), grid[-1], np.int64)])
  slack = len(grid) - clip_len
  if num_views == 1:
    starts = [slack // 2]
  else:
    step = max(1.0 * slack / (num_views - 1), 0.0)
    starts = [int(i * step) for i in range(num_views)]
  return [grid[s:s + clip_len].copy() for s in starts]


def resized_hw(frame_hw: tuple[int, int], short_side: int) -> tuple[int, int]:
  """The frame size after VideoMAE's short-side resize: (short_side, int(short_side * long /
  short)), in (height, width) order."""
  h, w = int(frame_hw[0]), int(frame_hw[1])
  _check_positive(height=h, width=w, short_side=short_side)
  if w < h:
    return int(short_side * h / w), short_side
  return short_side, int(short_side * w / h)


def spatial_boxes(frame_hw: tuple[int, int], *, crop_size: int, num_views: int) -> list[Box]:
  """The spatial crops of VideoMAE's test views, as boxes in source pixels (module docstring).

  Args:
    frame_hw: the source frame (height, width).
    crop_size: the short side after resizing and the side of each square crop.
    num_views: spatial crops (> 0); 1 = the middle crop.

  Returns:
    num_views (top, left, height, width) boxes in source pixel coordinates (fractional), for
    `transforms.crop_resize(clip, box, (crop_size, crop_size))`. Left to right for landscape
    frames, top to bottom for portrait and square ones.
  """
  _check_positive(crop_size=crop_size, num_views=num_views)
  h, w = int(frame_hw[0]), int(frame_hw[1])
  new_h, new_w = resized_hw((h, w), crop_size)
  along_height = new_h >= new_w
  new_long = new_h if along_height else new_w
  long, short = (h, w) if along_height else (w, h)
  slack = new_long - crop_size
  if num_views == 1:
    starts = [slack // 2]
  else:
    step = 1.0 * slack / (num_views - 1)
    starts = [int(i * step) for i in range(num_views)]
  scale = long / new_long  # source pixels per resized pixel along the long side
  boxes = []
  for start in starts:
    offset, extent = start * scale, crop_size * scale
    boxes.append((offset, 0.0, extent, float(short)) if along_height
                 else (0.0, offset, float(short), extent))
  return boxes


def union_indices(index_lists: Sequence[np.ndarray]) -> np.ndarray:
  """Sorted unique frame indices (int64) of all views: what to decode once for a video."""
  if not index_lists:
    raise ValueError("union_indices needs at least one index array")
  return np.unique(np.concatenate([np.asarray(i, np.int64).ravel() for i in index_lists]))


def enumerate_views(index_lists: Sequence[np.ndarray], num_spatial: int) -> list[View]:
  """The views in VideoMAE's order (temporal-major, spatial-minor), the order of `make_views`."""
  _check_positive(num_spatial=num_spatial)
  return [View(np.asarray(indices), t, s)
          for t, indices in enumerate(index_lists) for s in range(num_spatial)]


def make_views(clip: clip_lib.Clip, index_lists: Sequence[np.ndarray], *, crop_size: int,
               num_spatial: int) -> np.ndarray:
  """Cuts every view out of a clip decoded at the union of the views' frames.

  Args:
    clip: a decoded clip whose `frame_indices` (non-decreasing, e.g. `union_indices`) contain
      every index of every view.
    index_lists: each temporal view's frame indices (`temporal_views`), all of one length.
    crop_size: the crop side (a multiple of 8, the motion cell).
    num_spatial: spatial crops per temporal view (`spatial_boxes`).

  Returns:
    uint8 [len(index_lists) * num_spatial, clip_len, crop_size, crop_size, 3], view t * S + s =
    temporal view t in spatial crop s (`enumerate_views`).

  Raises:
    ValueError: on views of different lengths, an unsorted clip, an index the clip lacks, or a
      crop size that is not a multiple of 8.
  """
  if not index_lists:
    raise ValueError("make_views needs at least one temporal view")
  if crop_size <= 0 or crop_size % clip_lib.MOTION_CELL:
    raise ValueError(f"crop_size must be a positive multiple of {clip_lib.MOTION_CELL}, "
                     f"got {crop_size}")
  lists = [np.asarray(i, np.int64) for i in index_lists]
  if len({i.shape for i in lists}) != 1 or lists[0].ndim != 1:
    raise ValueError(f"all views need one 1-D length, got {[i.shape for i in lists]}")
  have = np.asarray(clip.frame_indices, np.int64)
  if np.any(np.diff(have) < 0):
    raise ValueError(f"clip {clip.name!r}: frame_indices must be sorted")
  positions = []
  for indices in lists:
    pos = np.minimum(np.searchsorted(have, indices), len(have) - 1)
    missing = indices[have[pos] != indices]
    if missing.size:
      raise ValueError(f"clip {clip.name!r} lacks frames {missing.tolist()} of a view")
    positions.append(pos)
  boxes = spatial_boxes(clip.frames.shape[1:3], crop_size=crop_size, num_views=num_spatial)
  # Resample the union once per crop, then pick each view's frames: the same pixels as cropping
  # every view separately (frames are resampled one by one), with fewer resamplings.
  crops = [transforms.crop_resize(clip, box, (crop_size, crop_size)).frames for box in boxes]
  return np.stack([crop[pos] for pos in positions for crop in crops])


def merge_scores(logits: np.ndarray) -> np.ndarray:
  """VideoMAE's merge: the mean over views of each view's softmax.

  Args:
    logits: [..., V, K] logits of V views (float).

  Returns:
    float64 [..., K] class probabilities (each row sums to 1).
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim < 2 or logits.shape[-2] == 0:
    raise ValueError(f"logits must be [..., V, K] with V > 0, got shape {logits.shape}")
  shifted = logits - logits.max(axis=-1, keepdims=True)
  probs = np.exp(shifted)
  probs /= probs.sum(axis=-1, keepdims=True)
  return probs.mean(axis=-2)
