"""The grain input pipeline: records -> decoded clips with motion -> transforms -> masks -> batches.

    source -> seeded global shuffle (per epoch) -> this process's share -> load (decode + motion +
    crop/flip + mask, in `num_threads` threads or `num_workers` processes) -> skip broken videos,
    counting them -> batch

Each element is a dict of NumPy arrays: "frames" uint8 [R, T, S, S, 3], "mask" bool [R, t, h, w],
"label" int32 [R] and "skipped" int32 (broken videos dropped just before this element). R is the
repeated-sampling count: R crops and masks of one decoded video (decoding is the expensive part).
Batches stack B/R elements; `flatten_repeats` turns a batch into B clips.

Each video is opened once for its frame count and its decode (`decode.opened`). Training clips
keep their frames in YUV until the crop, which swscale converts and resizes in one pass
(`yuv_frames`, ~1 grey level from the PIL resize that evaluation clips still use).

Finetuning clips (`ClipSpec.mask_strategy=None`) have no "mask" and no motion (frames are decoded
without vectors); their views follow VideoMAE's finetuning augmentation in this order: crop
(`crop`: random-resized or multi-scale), flip, RandAugment (the same ops on every frame),
random erasing (one box for the whole clip, VideoMAE's `cube` erasing; fresh noise per
frame). VideoMAE applies RandAugment before the crop, on the full frames;
here it runs on the S x S crop (cheaper; its geometric ops then move the crop's content, and
its translation range is 0.45 x S, as VideoMAE sets it from the input size).

Process sharding: process p of n takes elements p, p + n, ... of the global shuffled stream, so a
global batch holds the same clips for any process count (until a broken video is skipped: each
process then moves on to its own next element). Everything random is derived from the
seed and the element's position, so a restored iterator continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging

import grain
import numpy as np

from input_pipeline import augment
from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import motion as motion_lib
from input_pipeline import sampling
from input_pipeline import trajectories
from input_pipeline import transforms
from mgm_jax import masking

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """How one training clip is made from a video (filled from config.data / config.mask)."""
  num_frames: int = 16
  stride: int = 2
  sampling: str = "window"  # window | segments (TSN)
  size: int = 224
  crop: str = "multi_scale"  # multi_scale | random_resized
  scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
  flip: bool = False
  rand_augment_ops: int = 0
  rand_augment_magnitude: int = 7
  erase_prob: float = 0.0
  train: bool = True
  motion: str = "auto"  # decode.MOTION_POLICIES
  compensate_camera: bool = False
  flow_preset: str = "medium"  # motion="flow": OpenCV DIS preset (optical_flow.PRESETS)
  repeats: int = 1
  mask_strategy: str | None = "mgm"  # None: no mask and no motion (finetuning)
  mask_ratio: float = 0.75
  mask_jitter: float = 1.0
  mask_pool: str = "top1"  # MGM's centre per slot (masking.POOLS)
  mask_smooth: int = 0  # MGM: temporal smoothing of the slot maps, in slots
  tubelet: int = 2
  patch: int = 16
  # What the motion-aware reconstruction targets need (mgm_jax/targets.py), decoded only when
  # asked: the frames between each tubelet's sampled frames (dense frame differences), and
  # codec trajectories of points x points points per patch (MME's target; 0 = none).
  between_frames: bool = False
  trajectory_points: int = 0
  trajectory_steps: int = 0  # frame steps from each tubelet's first frame; 0: its span

  @property
  def token_grid(self) -> tuple[int, int, int]:
    return (self.num_frames // self.tubelet, self.size // self.patch, self.size // self.patch)

  @property
  def steps_tracked(self) -> int:
    """Frame steps each tubelet's trajectories cover (default: its span)."""
    return self.trajectory_steps or trajectories.default_steps(self.tubelet, self.stride)

  def between_indices(self, indices: np.ndarray) -> np.ndarray:
    """int64 [S * K]: per slot, the frames a + 1 ... a + stride - 1 after each of its sampled
    frames but the last (K = (tubelet - 1) * (stride - 1)), slot after slot."""
    slots = indices[: len(indices) // self.tubelet * self.tubelet].reshape(-1, self.tubelet)
    gaps = np.arange(1, self.stride)
    return (slots[:, :-1, None] + gaps[None, None, :]).reshape(-1)


class LoadClip(grain.transforms.RandomMap):
  """Record -> {"frames", "mask", "label"}, or a failure marker.

  A record is {"path", "label"} (a file) or {"video": bytes, "name", "label", ["num_frames"]}
  (an encoded file from prepared shards).
  """

  def __init__(self, spec: ClipSpec):
    self.spec = spec
    self._warned_fallback = False
    # Frame counts of files already probed: from the second epoch on, a clip opens its file once.
    self._frame_counts: dict[str, int] = {}

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    try:
      clip = self._decode(record, rng)
      frames, masks, extras = self._views(clip, rng)
    except decode.VideoDecodeError as e:
      return {"failed": str(e)}
    except Exception as e:  # pylint: disable=broad-except
      # Any other failure on one video (e.g. a frame size the crop cannot handle) skips that
      # video too, named with the exception type; a systematic bug shows as failures in a row
      # (BrokenDataError) or over the error budget, never as a dead or silent run.
      return {"failed": f"{record.get('name') or record.get('path')}: {type(e).__name__}: {e}"}
    out = {"frames": frames, "label": np.full((self.spec.repeats,), record["label"], np.int32)}
    if masks is not None:
      out["mask"] = masks
    out.update(extras)
    return out

  def _decode(self, record: dict, rng: np.random.Generator):
    source = record["video"] if "video" in record else record["path"]
    with decode.opened(source, name=record.get("name")) as video:  # one open for the probe and the decode
      return self._decode_opened(video, record, rng)

  def _decode_opened(self, video: decode.Opened, record: dict, rng: np.random.Generator):
    spec, name = self.spec, record.get("name")
    num = record.get("num_frames") or self._frame_counts.get(record.get("path"))
    if not num:
      num = decode.probe(video).num_frames
      if "path" in record:
        self._frame_counts[record["path"]] = num
    mode = "random" if spec.train else "center"
    if spec.sampling == "segments":
      indices = sampling.sample_segment_indices(num, spec.num_frames, rng, mode=mode)
    else:
      indices = sampling.sample_frame_indices(num, spec.num_frames, spec.stride, rng, mode=mode)
    if spec.mask_strategy is None:  # no mask to steer: frames only, no motion vectors read
      frames = decode.decode_frames(video, indices, pad_short=True, name=name,
                                    keep_yuv=spec.train)
      return clip_lib.without_motion(frames, indices, video.name)
    extra = spec.between_indices(indices) if spec.between_frames else None
    flow_at = (trajectories.flow_frames(indices, spec.tubelet, spec.steps_tracked)
               if spec.trajectory_points else None)
    clip = decode.decode_clip(video, indices, motion=spec.motion, name=name,
                              compensate_camera=spec.compensate_camera, pad_short=True,
                              extra_indices=extra, flow_indices=flow_at,
                              flow_preset=spec.flow_preset, keep_yuv=spec.train)
    if (spec.motion == "auto" and clip.motion_source != "mv" and not self._warned_fallback):
      self._warned_fallback = True  # once per process (worker): the data set needs preparing
      _log.warning("%s has no codec motion vectors: using luma frame differences (logged once; "
                   "launch/prepare_data.py transcodes a data set to H.264 with vectors)",
                   clip.name)
    return clip

  def _targets(self, view) -> dict[str, np.ndarray]:
    """What the motion-aware targets read from one view: "between" uint8 [t, K, S, S, 3];
    "trajectory" float32 [N, D] and "trajectory_valid" float32 (0: no vectors, not scored)."""
    spec, out = self.spec, {}
    t = spec.token_grid[0]
    if spec.between_frames:
      frames = view.extra_frames
      out["between"] = frames.reshape(t, -1, *frames.shape[1:])
    if spec.trajectory_points:
      steps = spec.steps_tracked
      size = view.frames.shape[1:3]
      if view.frame_flow is None or not view.frame_flow_valid.any():
        dim = trajectories.values_per_token(steps, spec.trajectory_points)
        out["trajectory"] = np.zeros((int(np.prod(spec.token_grid)), dim), np.float32)
        out["trajectory_valid"] = np.float32(0.0)
      else:
        flow = view.frame_flow.reshape(t, steps, *view.frame_flow.shape[1:])
        out["trajectory"] = trajectories.token_trajectories(
            flow, view.frame_flow_valid.reshape(t, steps), height=size[0], width=size[1],
            patch=spec.patch, points=spec.trajectory_points)
        out["trajectory_valid"] = np.float32(1.0)
    return out

  def _views(self, clip, rng: np.random.Generator):
    """`repeats` crops of the clip, their masks and target inputs: uint8 [R, T, S, S, 3],
    bool [R, t, h, w] (None without a mask strategy), {name: [R, ...]} (`_targets`)."""
    spec = self.spec
    frames, masks, extras = [], [], []
    for _ in range(spec.repeats):
      if not spec.train:
        view = transforms.center_crop(clip, spec.size, resize_short=spec.size)
      elif spec.crop == "random_resized":
        view = transforms.random_resized_crop(clip, spec.size, rng)
      else:
        view = transforms.multi_scale_crop(clip, spec.size, rng, scales=spec.scales)
      if spec.flip and rng.random() < 0.5:
        view = transforms.horizontal_flip(view)
      if spec.between_frames or spec.trajectory_points:
        extras.append(self._targets(view))
      if spec.mask_strategy is not None:
        slots = motion_lib.to_token_slots(view.magnitude, spec.tubelet)
        masks.append(masking.make_mask(spec.mask_strategy, spec.token_grid, spec.mask_ratio,
                                       rng, motion=slots, jitter=spec.mask_jitter,
                                       pool=spec.mask_pool, smooth=spec.mask_smooth))
      video = view.frames
      if spec.train and spec.rand_augment_ops:
        video = augment.rand_augment(video, rng, num_ops=spec.rand_augment_ops,
                                     magnitude=spec.rand_augment_magnitude)
      if spec.train and spec.erase_prob:
        video = augment.random_erasing(video, rng, prob=spec.erase_prob)
      frames.append(video)
    stacked = {k: np.stack([e[k] for e in extras]) for k in (extras[0] if extras else {})}
    return np.stack(frames), (np.stack(masks) if masks else None), stacked


class BrokenDataError(RuntimeError):
  """Too many videos in a row failed to decode: the data, not one file, is broken."""


class _SkipFailuresIterator(grain.DatasetIterator):
  """Drops failure markers, logging each and counting them into the next good element.

  After `max_consecutive` failures in a row it raises BrokenDataError instead of reading on:
  with every video broken (a wrong data.root, an unmounted disk) the loop would never end.
  """

  def __init__(self, parent: grain.DatasetIterator, max_consecutive: int):
    super().__init__(parent)
    self._max_consecutive = max_consecutive

  def __next__(self) -> dict:
    skipped = 0
    while True:
      element = next(self._parent)
      if "failed" not in element:
        element["skipped"] = np.int32(skipped)
        return element
      skipped += 1
      _log.warning("skipping broken video: %s", element["failed"])
      if skipped >= self._max_consecutive:
        raise BrokenDataError(
            f"{skipped} videos in a row failed to decode (data.max_consecutive_failures), the "
            f"last: {element['failed']}. Is the data where the config says (data.root, "
            "data.list_file, data.prepared_dir) and readable?")

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


class SkipFailures(grain.IterDataset):
  def __init__(self, parent: grain.IterDataset, max_consecutive: int = 200):
    super().__init__(parent)
    self._max_consecutive = max_consecutive

  def __iter__(self) -> grain.DatasetIterator:
    return _SkipFailuresIterator(self._parent.__iter__(), self._max_consecutive)


def make_dataset(source, spec: ClipSpec, *, batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1, num_epochs: int | None = None,
                 num_threads: int = 4, num_workers: int = 0, prefetch: int = 2,
                 max_consecutive_failures: int = 200) -> grain.IterDataset:
  """The per-process pipeline; `batch_size` counts clips per process (a multiple of repeats).

  `max_consecutive_failures`: raise BrokenDataError after that many broken videos in a row.
  """
  if batch_size % spec.repeats:
    raise ValueError(f"per-process batch {batch_size} is not divisible by data.repeats "
                     f"{spec.repeats}")
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
  # Lazy: the per-clip randomness is seeded by the clip's position in the GLOBAL stream, and only
  # this process's positions are ever loaded.
  ds = ds.random_map(LoadClip(spec))[process_index::process_count]
  videos_per_batch = batch_size // spec.repeats  # elements here are videos, not clips
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=max(prefetch * videos_per_batch, 1)))
  it = SkipFailures(it, max_consecutive_failures).batch(videos_per_batch, drop_remainder=True)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def flatten_repeats(batch: dict) -> dict:
  """[B/R, R, ...] -> [B, ...] for frames, mask and label; the skipped count summed."""
  out = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items() if k != "skipped"}
  out["skipped"] = np.asarray(batch["skipped"]).sum()
  return out
