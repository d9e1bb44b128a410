"""Visible motion energy: how much of a clip's change each mask strategy leaves the encoder.

MGM's premise is that motion marks what is worth reconstructing, and that a motion-guided mask
hides it where random masks leave it visible. The cheapest check on one's own data, with no model:
for each strategy, the fraction of the clip's frame-difference energy that lies under VISIBLE
tokens. A random mask leaves about (1 - ratio) visible; a mask that follows the motion leaves less.

    view, previous = load_view("video.mp4", num_frames=16, stride=2, size=224)
    energy = token_energy(view.frames, previous, tubelet=2, patch=16)      # [t, h, w]
    slots = motion.to_token_slots(view.magnitude, 2)                        # the mask's guidance
    mask = make_variant_mask(Variant.parse("mgm"), energy.shape, 0.75, rng, slots)
    visible_fraction(energy, mask)

Conventions:
  * The clip is the one the evaluation pipeline makes (`pipeline.LoadClip` with train=False): the
    centred window of `num_frames` frames `stride` apart (`sampling.sample_frame_indices`,
    mode "center"), decoded with `decode.decode_clip` (`motion` policy, `compensate_camera`,
    pad_short), then `transforms.center_crop(clip, size, resize_short=size)`. The masks are
    steered exactly as the trainer steers them: `motion.to_token_slots(view.magnitude, tubelet)`
    (the 8-px motion grid of the crop, averaged over each tubelet) passed as `motion=` to
    `masking.make_mask` on the token grid (num_frames / tubelet, size / patch, size / patch),
    which maps the motion grid onto tokens itself (nearest neighbour, the paper's Eq. 6).
  * Energy is measured on the same S x S crop the model sees. Luma Y = 0.299 R + 0.587 G +
    0.114 B (BT.601, 0..255). The energy of sampled frame k is the SQUARED luma difference to
    the clip's previous sampled frame, per pixel: the change over the interval (i_{k-1}, i_k],
    the interval the clip's motion covers too (`motion.py`). Frame 0 is compared with frame
    i_0 - stride (decoded and cropped the same way); where that is before the video's start,
    frame 0's energy is 0. Squared (not absolute) so that moving edges count far more than codec
    noise and slight flicker. Token (s, i, j)'s energy is the sum over its tubelet's frames
    2s .. 2s + tubelet - 1 and its pixels [16i, 16i + 16) x [16j, 16j + 16) (for patch 16).
  * Visible fraction of a mask = energy of the unmasked tokens / the clip's total energy; clips
    whose total energy is 0 (a static clip) have no fraction and are left out (counted).
  * A variant is (strategy, pool, smooth): `masking.STRATEGIES`, MGM's pooling of the motion map
    (`masking.POOLS` where the installed masking has it; "top1" = the paper's arg-max) and its
    temporal smoothing radius in slots (0 = off). Written "mgm", "mgm/box", "mgm/top1/2".
  * Two oracles that see the energy itself (upper bounds, not strategies one could train with):
      oracle_box     per slot, MGM's box without jitter (the sides `masking` gives an aspect-1
                     box of n = round(r h w) tokens: bw = round(sqrt(n)), bh = ceil(n / bw),
                     turned to bh = h, bw = ceil(n / h) when taller than the grid) at the
                     position that hides the most energy, the bw bh - n surplus cells taken from
                     its lowest-energy cells. Hides at least as much as any `block` mask and any
                     jitter-free `mgm` box, wherever they are placed.
      oracle_tokens  per slot, the n highest-energy tokens: the bound for every per-slot
                     strategy (all but `random`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Sequence

import numpy as np

from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import sampling
from input_pipeline import transforms
from mgm_jax import masking

ORACLES = ("oracle_box", "oracle_tokens")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the report: a mask strategy (or an oracle) with MGM's pooling and smoothing."""

  strategy: str
  pool: str = "top1"
  smooth: int = 0

  @property
  def name(self) -> str:
    if self.smooth:
      return f"{self.strategy}/{self.pool}/{self.smooth}"
    return self.strategy if self.pool == "top1" else f"{self.strategy}/{self.pool}"

  @classmethod
  def parse(cls, text: str) -> Variant:
    """"strategy[/pool[/smooth]]" -> Variant; ValueError naming what is wrong."""
    parts = text.strip().split("/")
    if len(parts) > 3 or not parts[0]:
      raise ValueError(f"mask variant {text!r}: expected strategy[/pool[/smooth]]")
    strategy = parts[0]
    if strategy not in (*masking.STRATEGIES, *ORACLES):
      raise ValueError(f"mask variant {text!r}: unknown strategy {strategy!r}; choose one of "
                       f"{(*masking.STRATEGIES, *ORACLES)}")
    pool = parts[1] if len(parts) > 1 else "top1"
    smooth = parts[2] if len(parts) > 2 else "0"
    if not smooth.isdigit():
      raise ValueError(f"mask variant {text!r}: smooth must be an int >= 0, got {smooth!r}")
    variant = cls(strategy, pool, int(smooth))
    if (pool != "top1" or variant.smooth) and strategy not in masking.MOTION_STRATEGIES:
      raise ValueError(f"mask variant {text!r}: pool and smooth apply to "
                       f"{masking.MOTION_STRATEGIES} only")
    if pool not in masking.POOLS:
      raise ValueError(f"mask variant {text!r}: pool {pool!r} is not one of {masking.POOLS}")
    return variant


def default_variants() -> list[Variant]:
  """Every strategy, MGM with each non-default pool and smoothed over +-1 slot, and the two
  oracles."""
  out = [Variant(s) for s in masking.STRATEGIES]
  out += [Variant("mgm", p) for p in masking.POOLS if p != "top1"]
  out.append(Variant("mgm", "top1", 1))
  return out + [Variant(o) for o in ORACLES]


def luma(frames: np.ndarray) -> np.ndarray:
  """float32 [..., H, W]: BT.601 luma (0..255) of uint8 RGB [..., H, W, 3]."""
  return np.asarray(frames, np.float32) @ _LUMA


def token_energy(frames: np.ndarray, previous: np.ndarray | None, *, tubelet: int,
                 patch: int) -> np.ndarray:
  """float32 [T / tubelet, H / patch, W / patch]: each token's frame-difference energy.

  Args:
    frames: uint8 [T, H, W, 3], the cropped clip (H, W multiples of `patch`, T of `tubelet`).
    previous: uint8 [H, W, 3], the frame before frame 0 (cropped the same way), or None: frame
      0's energy is then 0.
    tubelet, patch: the token size.
  """
  t_len, height, width, _ = frames.shape
  if t_len % tubelet or height % patch or width % patch:
    raise ValueError(f"frames {frames.shape} do not split into {tubelet}x{patch}x{patch} tokens")
  y = luma(frames)
  before = np.concatenate([y[:1] if previous is None else luma(previous)[None], y[:-1]])
  per_pixel = np.square(y - before)
  return per_pixel.reshape(t_len // tubelet, tubelet, height // patch, patch, width // patch,
                           patch).sum(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def load_view(source: str | os.PathLike, *, num_frames: int, stride: int, size: int,
              motion: str = "auto", compensate_camera: bool = False,
              flow_preset: str = "medium", name: str | None = None) -> tuple[clip_lib.Clip, np.ndarray | None]:
  """The evaluation pipeline's clip of a video (module docstring) and the frame before it.

  Returns:
    (the centre-cropped S x S clip with its motion, uint8 [S, S, 3] frame i_0 - stride cropped
    the same way, or None where the window starts within `stride` frames of the video's start).

  Raises:
    decode.VideoDecodeError: the video is unusable.
  """
  with decode.opened(source, name=name) as video:  # as the pipeline: one open
    num = decode.probe(video).num_frames
    indices = sampling.sample_frame_indices(num, num_frames, stride, None, mode="center")
    clip = decode.decode_clip(video, indices, motion=motion, compensate_camera=compensate_camera,
                              pad_short=True, name=name, flow_preset=flow_preset)
    first = int(indices[0]) - stride
    before = None if first < 0 else decode.decode_frames(video, [first], pad_short=True,
                                                         name=name)
  view = transforms.center_crop(clip, size, resize_short=size)
  if before is None:
    return view, None
  before_clip = clip_lib.without_motion(before, np.array([first]), view.name)
  return view, transforms.center_crop(before_clip, size, resize_short=size).frames[0]


def make_variant_mask(variant: Variant, grid: Sequence[int], mask_ratio: float,
                      rng: np.random.Generator, slots: np.ndarray | None, *,
                      jitter: float = 1.0, energy: np.ndarray | None = None) -> np.ndarray:
  """bool [t, h, w] (True = masked) of one variant; the oracles need `energy` [t, h, w]."""
  grid = tuple(int(g) for g in grid)
  if variant.strategy in ORACLES:
    if energy is None:
      raise ValueError(f"{variant.name} needs the clip's energy")
    oracle = oracle_box if variant.strategy == "oracle_box" else oracle_tokens
    return oracle(energy, mask_ratio)
  kwargs = {}
  if variant.pool != "top1":
    kwargs["pool"] = variant.pool
  if variant.smooth:
    kwargs["smooth"] = variant.smooth
  return masking.make_mask(variant.strategy, grid, mask_ratio, rng, motion=slots, jitter=jitter,
                           **kwargs)


def box_sides(n: int, h: int, w: int) -> tuple[int, int]:
  """(bw, bh): the sides `masking` gives a jitter-free (aspect 1) box of n tokens."""
  bw, bh, _ = masking.box_sides(n, h, w)
  return bw, bh


def oracle_tokens(energy: np.ndarray, mask_ratio: float) -> np.ndarray:
  """bool [t, h, w]: per slot the round(r h w) tokens of highest energy."""
  t, h, w = energy.shape
  n = masking.masked_per_slot((t, h, w), mask_ratio)
  flat = energy.reshape(t, -1)
  order = np.argsort(-flat, axis=1, kind="stable")[:, :n]
  out = np.zeros(flat.shape, bool)
  np.put_along_axis(out, order, True, axis=1)
  return out.reshape(t, h, w)


def oracle_box(energy: np.ndarray, mask_ratio: float) -> np.ndarray:
  """bool [t, h, w]: per slot the box that hides the most energy (module docstring)."""
  t, h, w = energy.shape
  n = masking.masked_per_slot((t, h, w), mask_ratio)
  bw, bh = box_sides(n, h, w)
  windows = np.lib.stride_tricks.sliding_window_view(energy, (bh, bw), axis=(1, 2))
  cells = windows.reshape(t, windows.shape[1], windows.shape[2], bh * bw)
  hidden = -np.sort(-cells, axis=-1)[..., :n].sum(axis=-1)  # [t, positions y, positions x]
  out = np.zeros((t, h, w), bool)
  for s in range(t):
    y0, x0 = np.unravel_index(np.argmax(hidden[s]), hidden[s].shape)
    keep = np.zeros(bh * bw, bool)
    keep[np.argsort(-cells[s, y0, x0], kind="stable")[:n]] = True
    out[s, y0:y0 + bh, x0:x0 + bw] = keep.reshape(bh, bw)
  return out


def visible_fraction(energy: np.ndarray, mask: np.ndarray) -> float | None:
  """Energy under the visible (unmasked) tokens / total energy; None for an energy-free clip."""
  total = float(np.sum(energy, dtype=np.float64))
  if total <= 0.0:
    return None
  return float(np.sum(energy[~mask], dtype=np.float64)) / total


@dataclasses.dataclass
class Report:
  """Visible fractions per (variant name, ratio): one value per (clip, seed).

  Attributes:
    fractions: {(variant, ratio): [fraction, ...]}.
    mask_seconds: {variant: total seconds spent building its masks}.
    mask_count: {variant: masks built}.
    static_clips: names of the clips without energy (left out).
  """

  fractions: dict[tuple[str, float], list[float]] = dataclasses.field(default_factory=dict)
  mask_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
  mask_count: dict[str, int] = dataclasses.field(default_factory=dict)
  static_clips: list[str] = dataclasses.field(default_factory=list)

  def summary(self, variant: str, ratio: float) -> tuple[float, float, int]:
    """(mean, std, count) of the variant's visible fractions at `ratio` (nan if none)."""
    values = np.asarray(self.fractions.get((variant, ratio), []), np.float64)
    if not values.size:
      return math.nan, math.nan, 0
    return float(values.mean()), float(values.std()), int(values.size)


def add_clip(report: Report, energy: np.ndarray, slots: np.ndarray, name: str, *,
             variants: Sequence[Variant], ratios: Sequence[float], seeds: int, clip_index: int,
             jitter: float = 1.0) -> None:
  """Adds one clip's visible fractions (every variant, ratio and seed) to `report`.

  The mask of (clip_index, seed, variant i, ratio j) draws from
  `np.random.default_rng((seed, clip_index, i, j))`: reproducible, independent across rows.
  The oracles are deterministic: one value per clip and ratio.
  """
  if float(np.sum(energy, dtype=np.float64)) <= 0.0:
    report.static_clips.append(name)
    return
  for i, variant in enumerate(variants):
    draws = 1 if variant.strategy in ORACLES else seeds
    for j, ratio in enumerate(ratios):
      for seed in range(draws):
        rng = np.random.default_rng((seed, clip_index, i, j))
        start = time.perf_counter()
        mask = make_variant_mask(variant, energy.shape, ratio, rng, slots, jitter=jitter,
                                 energy=energy)
        report.mask_seconds[variant.name] = (report.mask_seconds.get(variant.name, 0.0)
                                             + time.perf_counter() - start)
        report.mask_count[variant.name] = report.mask_count.get(variant.name, 0) + 1
        report.fractions.setdefault((variant.name, ratio), []).append(
            visible_fraction(energy, mask))
