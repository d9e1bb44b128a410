"""Motion on the 8-pixel grid from codec motion vectors or luma frame differences (pure NumPy).

Everything here works on whole clips at once, so that the per-frame cost inside the decode loop is
only copying the codec's side data out (see `decode.py`).

Conventions:
  * Grid: a frame of H x W pixels has Gh x Gw = ceil(H / 8) x ceil(W / 8) cells
    (`clip.MOTION_CELL`); cell (i, j) covers pixels [8i, 8i + 8) x [8j, 8j + 8).
  * Velocity: (dx, dy) in pixels per frame, positive = right / down.
  * Codec vectors (FFmpeg `AVMotionVector`): the block of w x h pixels centred at (dst_x, dst_y) in
    the current frame was predicted from `src = dst + motion / motion_scale` in a reference frame.
    `source < 0` = a past reference, so the content moved by `-motion / scale` since then;
    `source > 0` = a future reference, where the content will be at `+motion / scale`. Either way
    the displacement is divided by the reference distance in frames. FFmpeg does not export that
    distance: it defaults to 1 (exact for streams encoded without B-frames and with one reference
    frame); `decode.py` passes per-frame estimates from the decoding order for other streams.
  * A frame's field: the mean of the velocities of all vectors covering a cell (bi-predicted blocks
    carry two vectors; the (0, 0) placeholders FFmpeg exports for the unused list of a B-frame
    partition are not counted: `_predictions_per_block`); cells covered by no vector (intra
    blocks) are 0. Blocks partly outside the grid are clipped to it.
  * Speed: a 16-frame clip at stride 4 has 20k-60k blocks. They are scattered over the whole
    clip at once (16x16 macroblocks on a 2x2-cell grid, the rest per cell): by a C kernel
    (`_flow_kernel.c`, one pass, GIL released) where it was built at install, else by a few
    bincounts (`_flow_numpy`, the reference: the same bits, 3-4.5x slower); no Python loop over
    blocks or frames, and no BLAS (whose threads cost milliseconds on a busy machine).
  * Intervals and accumulation (`interval_weights`): the motion of sampled frame i_t is the mean
    per-frame motion over all frames in (i_{t-1}, i_t]. The first sampled frame uses the same gap
    as the next step (1 for single-frame clips), i.e. frames (i_0 - gap, i_0], clipped at frame 0
    and, for codec vectors, at the keyframe i_0 is decoded from (`decode.py`): the mean is then
    over the frames that exist or are decoded. (A keyframe has no vectors; reaching past it would
    decode the whole previous GOP for at most gap - 1 frames of motion: with 16-frame GOPs at
    stride 4, 3 windows in 16 cross a keyframe, +6% frames decoded on average.)
  * Fill rule: a frame without motion (an I-frame has no vectors; the first frame of a video has no
    frame difference) takes the mean of the nearest earlier and the nearest later frame of the
    decoded window that have motion, or the one of them that exists. If no frame of the window has
    motion, the frames stay zero and `has_vectors` is False everywhere.
  * Coverage (`vectors_to_flow(..., with_coverage=True)`): per output and cell, the share of the
    output's frame weights (after the fill rule) that falls on frames where at least one vector
    covers the cell, zero vectors included (a static block is a measurement; an intra block or a
    frame without vectors is not): float32 in [0, 1]. A cell with coverage c holds c times the
    mean velocity of its covered frames.
  * Camera compensation (`magnitude(..., compensate_camera=True)`): per output, a global affine
    motion model (pan, zoom, rotation, shear) is fitted robustly on the covered cells
    (`fit_camera_motion`) and subtracted as it was measured, i.e. times each cell's coverage.
    A cell no vector covered keeps magnitude 0; outputs covering too few cells are not
    compensated. A plain median over all cells would not do: on real footage many cells are
    exactly 0 (no vector), so the median is often 0 while the camera pans.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from input_pipeline import clip as clip_lib

try:  # the C kernel of `vectors_to_flow`, built at install where a C compiler is found
  from input_pipeline import _flow_kernel
except ImportError:  # not built: the NumPy reference `_flow_numpy` computes the same bits
  _flow_kernel = None

CELL = clip_lib.MOTION_CELL

# FFmpeg's AVMotionVector (libavutil/motion_vector.h), as PyAV's `MotionVectors.to_ndarray()`.
MOTION_VECTOR_DTYPE = np.dtype(
    [
        ("source", "int32"),
        ("w", "uint8"),
        ("h", "uint8"),
        ("src_x", "int16"),
        ("src_y", "int16"),
        ("dst_x", "int16"),
        ("dst_y", "int16"),
        ("flags", "uint64"),
        ("motion_x", "int32"),
        ("motion_y", "int32"),
        ("motion_scale", "uint16"),
    ],
    align=True,
)


# A vector is 40 bytes = 5 uint64 words; motion_x and motion_y (bytes 24-31) are word 3.
_MOTION_WORD = MOTION_VECTOR_DTYPE.fields["motion_x"][1] // 8


def _rows(vectors: np.ndarray) -> np.ndarray:
  """uint64 [N, 5] view of motion vectors (row gathers on it are ~20x faster than on records)."""
  words = MOTION_VECTOR_DTYPE.itemsize // 8
  return np.ascontiguousarray(vectors).view(np.uint64).reshape(-1, words)


def _take(vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
  """vectors[index], fast."""
  return np.take(_rows(vectors), index, axis=0).reshape(-1).view(MOTION_VECTOR_DTYPE)


def grid_shape(height: int, width: int) -> tuple[int, int]:
  """(Gh, Gw): the motion grid of a height x width frame."""
  return -(-height // CELL), -(-width // CELL)


def interval_weights(
    frame_ids: np.ndarray,
    sampled: np.ndarray,
    has_motion: np.ndarray | None = None,
    *,
    first_gap: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Linear map from per-frame motion to per-sampled-frame motion (accumulation + fill).

  Args:
    frame_ids: int [F], the consecutive frame indices of the decoded window (display order).
    sampled: int [T], sorted sampled frame indices, all in `frame_ids`.
    has_motion: bool [F], which frames carry motion (default: all).
    first_gap: the first sampled frame's interval length (default: sampled[1] - sampled[0], or 1
      for a single frame); pass it when `sampled` is a prefix of a longer request.

  Returns:
    weights: float32 [T, F]. `weights @ per_frame` is the mean per-frame motion of each sampled
      interval, with frames lacking motion replaced by the fill rule (module docstring).
    has_vectors: bool [T], True where the interval held at least one frame with motion.
  """
  frame_ids = np.asarray(frame_ids, np.int64)
  sampled = np.asarray(sampled, np.int64)
  num = frame_ids.shape[0]
  valid = np.ones(num, bool) if has_motion is None else np.asarray(has_motion, bool)
  if num == 0 or sampled.size == 0:
    return np.zeros((sampled.size, num), np.float32), np.zeros(sampled.size, bool)
  if np.any(np.diff(frame_ids) != 1):
    raise ValueError("frame_ids must be consecutive")
  if np.any(np.diff(sampled) < 0):
    raise ValueError("sampled frame indices must be sorted")
  if first_gap is None:
    first_gap = int(sampled[1] - sampled[0]) if sampled.size > 1 else 1
  starts = np.concatenate([[sampled[0] - max(first_gap, 1) + 1], sampled[:-1] + 1])
  starts = np.minimum(starts, sampled)  # repeated indices: the interval is the frame itself
  lo = np.clip(starts - frame_ids[0], 0, num)
  hi = np.clip(sampled - frame_ids[0] + 1, 0, num)
  if np.any(hi <= lo):
    raise ValueError("a sampled frame is outside the decoded window")

  # Every (interval t, frame f in it) pair, then where f's motion comes from: f itself, or its
  # nearest earlier / later frames with motion (the fill rule).
  gaps = hi - lo
  pair_t = np.repeat(np.arange(sampled.size), gaps)
  pair_f = np.arange(pair_t.size) - np.repeat(np.cumsum(gaps) - gaps, gaps) + np.repeat(lo, gaps)
  share = 1.0 / gaps[pair_t]
  weights = np.zeros(sampled.size * num)
  valid_pos = np.flatnonzero(valid)
  if valid_pos.size:
    after = np.searchsorted(valid_pos, pair_f)  # first frame with motion at or after f
    own = valid[pair_f]
    prev = valid_pos[np.maximum(after - 1, 0)]
    nxt = valid_pos[np.minimum(after, valid_pos.size - 1)]
    has_prev = ~own & (after > 0)
    has_next = ~own & (after < valid_pos.size)
    sides = np.maximum(has_prev.astype(np.int64) + has_next, 1)
    rows = pair_t * num
    weights += np.bincount(rows[own] + pair_f[own], share[own], minlength=weights.size)
    for side, source in ((has_prev, prev), (has_next, nxt)):
      weights += np.bincount(rows[side] + source[side], (share / sides)[side],
                             minlength=weights.size)
  weights = weights.reshape(sampled.size, num).astype(np.float32)
  counts = np.concatenate([[0], np.cumsum(valid)])
  has_vectors = (counts[hi] - counts[lo]) > 0
  return weights, has_vectors


@dataclasses.dataclass(frozen=True)
class FrameVectors:
  """The motion vectors of F consecutive frames, stored back to back.

  Attributes:
    vectors: [N] `MOTION_VECTOR_DTYPE`, frame after frame.
    counts: int64 [F], vectors per frame (0: none, e.g. an I-frame).
  """

  vectors: np.ndarray
  counts: np.ndarray

  @classmethod
  def from_frames(cls, frames: Sequence[np.ndarray | None]) -> FrameVectors:
    """From one array (or None) per frame."""
    counts = np.array([0 if v is None else v.shape[0] for v in frames], np.int64)
    parts = [np.ascontiguousarray(v, MOTION_VECTOR_DTYPE).view(np.uint8) for v in frames
             if v is not None and v.shape[0]]
    raw = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return cls(raw.view(MOTION_VECTOR_DTYPE), counts)

  @property
  def num_frames(self) -> int:
    return int(self.counts.shape[0])

  @property
  def has_vectors(self) -> np.ndarray:
    """bool [F]."""
    return self.counts > 0

  def without(self, frames: np.ndarray) -> FrameVectors:
    """A copy with the vectors of the frames where `frames` (bool [F]) is True removed."""
    drop = np.asarray(frames, bool)
    keep = np.flatnonzero(np.repeat(~drop, self.counts))
    return FrameVectors(_take(self.vectors, keep), np.where(drop, 0, self.counts))


def _rounds(weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
  """Splits a [T, S] weight matrix into rounds that use each frame (column) at most once.

  A frame can feed several outputs: its own interval, and the neighbouring frames without vectors
  that it fills in. Returns [(output [S], weight [S])], output -1 where the frame is not used in
  that round. Round 0 holds every frame that is used at all.
  """
  num_frames = weights.shape[1]
  nz_t, nz_s = np.nonzero(weights.T)[::-1]  # sorted by frame
  first = np.searchsorted(nz_s, nz_s)
  rank = np.arange(nz_s.size) - first  # how many earlier nonzeros the same frame has
  rounds = []
  for r in range(int(rank.max(initial=-1)) + 1):
    pick = rank == r
    out = np.full(num_frames, -1, np.int64)
    out[nz_s[pick]] = nz_t[pick]
    w = np.zeros(num_frames, np.float64)
    w[nz_s[pick]] = weights[nz_t[pick], nz_s[pick]]
    rounds.append((out, w))
  return rounds


def _cell_bins(dst_x: np.ndarray, dst_y: np.ndarray, w: np.ndarray, h: np.ndarray,
               grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """(block index [M], cell index [M]): the grid cells (flattened) covered by each block.

  Ordered by the offset (oy, ox) of the cell from the block's first cell, then by block.
  """
  gh, gw = grid
  w = w.astype(np.int32)
  h = h.astype(np.int32)
  x0 = dst_x - (w >> 1)
  y0 = dst_y - (h >> 1)
  cx0, cy0 = x0 >> 3, y0 >> 3  # floor division by CELL = 8
  nx = ((x0 + w - 1) >> 3) - cx0 + 1
  ny = ((y0 + h - 1) >> 3) - cy0 + 1
  # One offset at a time (H.264 blocks cover at most 2 x 2 cells: <= 4 passes over the blocks,
  # ~2x faster than all offsets in one [K, M] array). A negative cell index wraps to a large
  # unsigned one: one comparison per bound.
  blocks, cells = [], []
  for oy in range(int(ny.max(initial=0))):
    cy = cy0 + oy
    in_row = (ny > oy) & (cy.view(np.uint32) < gh)
    for ox in range(int(nx.max())):
      cx = cx0 + ox
      block = np.flatnonzero(in_row & (nx > ox) & (cx.view(np.uint32) < gw))
      blocks.append(block)
      cells.append(cy[block] * gw + cx[block])
  if not blocks:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(blocks), np.concatenate(cells).astype(np.int64)


@functools.lru_cache(maxsize=64)
def _macroblock_of_cell(grid: tuple[int, int]) -> np.ndarray:
  """int [Gh * Gw]: the macroblock (flattened, on the ceil(G / 2) grid) holding each cell."""
  gh, gw = grid
  index = (np.arange(gh)[:, None] // 2) * -(-gw // 2) + np.arange(gw)[None, :] // 2
  index = index.reshape(-1)
  index.flags.writeable = False
  return index


def _upsample_macroblocks(sums: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """[T, Gh * Gw, ...]: macroblock sums [T, M, ...] copied to their 2x2 cells, cropped to the grid.

  One gather (the macroblocks past M, if any, are never read).
  """
  return np.take(sums, _macroblock_of_cell(grid), axis=1)


def _predictions_per_block(vectors: np.ndarray, slot: np.ndarray, moving: np.ndarray,
                           mb_grid: tuple[int, int]) -> np.ndarray:
  """float64 [M]: for each moving vector (`moving`: bool [N]), how many predictions its block has.

  Bi-predicted blocks carry one vector per reference list; their velocities are averaged. FFmpeg
  (`ff_print_debug_info2` in libavcodec/mpegutils.c) exports, for each macroblock and each
  reference list that the *macroblock* uses, one vector per block (16x16, two 16x8 or 8x16, or
  four 8x8). A 16x16 block's vectors are therefore exactly its predictions (2 if bi-predicted,
  zero or not). A partitioned macroblock of a B-frame that uses both lists gets a vector from
  each list for every block, also for a block that predicts from one list only, and H.264 leaves
  the unused list's motion at exactly (0, 0) (src == dst): averaging such placeholders in would
  halve those blocks' motion. The rule: in a partitioned block (w or h < 16), zero vectors next
  to a moving one are placeholders; only its moving vectors count. (A block whose vectors are
  all zero is static and adds nothing anyway. A genuinely bi-predicted partition with one
  exactly-zero vector, which is rare, is read as predicted from its moving vector alone.)
  """
  mbh, mbw = mb_grid
  dst_x = vectors["dst_x"].astype(np.int64)
  dst_y = vectors["dst_y"].astype(np.int64)
  mb = (slot * (mbh + 1) + np.clip(dst_y >> 4, 0, mbh)) * (mbw + 1) + np.clip(dst_x >> 4, 0, mbw)
  whole = (vectors["w"] == 16) & (vectors["h"] == 16)
  index = np.flatnonzero(moving)
  count = np.bincount(mb, weights=whole)[mb[index]]  # 16x16: vectors of the same macroblock
  part = np.flatnonzero(~whole[index])
  if part.size:
    # A block is identified by its macroblock and its centre on the 4-pixel grid: the centres of
    # 16x16, 16x8, 8x16 and 8x8 blocks all differ within a macroblock.
    at = index[part]
    key = mb[at] * 16 + ((dst_y[at] >> 2) & 3) * 4 + ((dst_x[at] >> 2) & 3)
    _, block, size = np.unique(key, return_inverse=True, return_counts=True)
    count[part] = size[block]
  return np.maximum(count, 1.0)


def _covered_cells(vectors: np.ndarray, slot: np.ndarray, num_frames: int,
                   grid: tuple[int, int]) -> np.ndarray:
  """float32 [F, Gh, Gw]: 1 where at least one of frame f's vectors covers the cell, else 0.

  `slot` (int [N]) is each vector's frame. Macroblock-aligned 16x16 blocks (nearly all) take one
  bin on the macroblock grid; the other blocks mark the cells they cover.
  """
  mbh, mbw = -(-grid[0] // 2), -(-grid[1] // 2)
  dst_x, dst_y = vectors["dst_x"], vectors["dst_y"]
  bw, bh = vectors["w"], vectors["h"]
  col, row = dst_x >> 4, dst_y >> 4
  is_mb = ((bw == 16) & (bh == 16) & ((((dst_x ^ 8) | (dst_y ^ 8)) & 15) == 0)
           & (col.view(np.uint16) < mbw) & (row.view(np.uint16) < mbh))
  mb = np.flatnonzero(is_mb)
  bins = (slot[mb] * mbh + row[mb]) * mbw + col[mb]
  hits = np.bincount(bins, minlength=num_frames * mbh * mbw).reshape(num_frames, -1)
  covered = _upsample_macroblocks(hits, grid).astype(np.float32)
  rest = np.flatnonzero(~is_mb)
  if rest.size:
    block, cell = _cell_bins(dst_x[rest], dst_y[rest], bw[rest], bh[rest], grid)
    covered[slot[rest[block]], cell] = 1.0
  return np.minimum(covered, 1.0).reshape(num_frames, *grid)


def vectors_to_flow(
    vectors: FrameVectors | Sequence[np.ndarray | None],
    weights: np.ndarray,
    height: int,
    width: int,
    *,
    past_distance: np.ndarray | None = None,
    future_distance: np.ndarray | None = None,
    with_coverage: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """Dense velocity fields of weighted combinations of frames, vectorised over the whole clip.

  Args:
    vectors: F frames of motion vectors: a `FrameVectors`, or one `MOTION_VECTOR_DTYPE` array
      (or None) per frame.
    weights: float [T, F]; output t is sum_f weights[t, f] * field(frame f). Use
      `interval_weights` for clip accumulation, the identity for per-frame fields.
    height: frame height in pixels.
    width: frame width in pixels.
    past_distance: float [F], frames between each frame and its past reference (default 1).
    future_distance: float [F], frames to its future reference (default 1).
    with_coverage: also return each output's coverage (module docstring).

  Returns:
    float32 [T, Gh, Gw, 2] velocity (dx, dy) in px/frame; with `with_coverage`, the pair
    (velocity, coverage float32 [T, Gh, Gw] in [0, 1]).
  """
  if not isinstance(vectors, FrameVectors):
    vectors = FrameVectors.from_frames(vectors)
  grid = grid_shape(height, width)
  weights = np.asarray(weights, np.float64)
  num_out, num_frames = weights.shape
  if vectors.num_frames != num_frames:
    raise ValueError(f"{vectors.num_frames} frames of vectors for weights {weights.shape}")
  used = np.any(weights != 0, axis=0) & vectors.has_vectors
  coverage = np.zeros((num_out, *grid), np.float32)

  def result(flow: np.ndarray):
    return (flow, coverage) if with_coverage else flow

  if not used.any():
    return result(np.zeros((num_out, *grid, 2), np.float32))
  dist = []
  for name, d in (("past_distance", past_distance), ("future_distance", future_distance)):
    d = np.ones(num_frames) if d is None else np.ascontiguousarray(d, np.float64)
    if d.shape != (num_frames,):
      raise ValueError(f"{name} has shape {d.shape}, expected ({num_frames},)")
    dist.append(d)
  allv = vectors.vectors
  slot = np.repeat(np.arange(num_frames), vectors.counts)  # frame of each block
  if ((with_coverage or _flow_kernel is None)  # (the kernel skips unused frames itself)
      and not np.array_equal(used, vectors.has_vectors)):
    keep = np.flatnonzero(used[slot])
    allv, slot = _take(allv, keep), slot[keep]
  rounds = _rounds(weights * used)
  if with_coverage:  # all vectors count, zero ones too: a static block is a measurement
    coverage = np.minimum(accumulate(_covered_cells(allv, slot, num_frames, grid),
                                     weights * used), np.float32(1.0))
  if _flow_kernel is None:
    field = _flow_numpy(allv, slot, used, *dist, rounds, grid, num_out)
  else:  # all the rest in one pass
    field = np.empty((num_out, *grid, 2), np.float64)  # (empty: no fresh zero pages to fault)
    _flow_kernel.scatter(_rows(allv), slot, *dist, np.stack([out for out, _ in rounds]),
                         np.stack([w for _, w in rounds]), len(rounds), num_frames, grid[0],
                         grid[1], num_out, field)
  return result(field.reshape(num_out, *grid, 2).astype(np.float32))


def _flow_numpy(vectors: np.ndarray, slot: np.ndarray, used: np.ndarray, past: np.ndarray,
                future: np.ndarray, rounds: list[tuple[np.ndarray, np.ndarray]],
                grid: tuple[int, int], num_out: int) -> np.ndarray:
  """float64 [T, Gh * Gw, 2]: the fields of `vectors_to_flow`, in NumPy.

  The reference that `_flow_kernel.scatter` (C, one pass) reproduces bit for bit.

  Args:
    vectors: [N] the vectors of the frames some output uses (`MOTION_VECTOR_DTYPE`).
    slot: int [N], each vector's frame.
    used: bool [F], those frames.
    past: float64 [F], each frame's distance to its past reference.
    future: float64 [F], to its future reference.
    rounds: `_rounds` of the weights.
    grid: (Gh, Gw).
    num_out: T.
  """
  has_forward = bool(np.any(vectors["source"] > 0))
  per_vector = has_forward or np.any(past[used] != 1) or np.any(future[used] != 1)
  # Blocks that did not move add nothing (static backgrounds: most of them): the scatter works on
  # the moving ones only.
  is_moving = _rows(vectors)[:, _MOTION_WORD] != 0  # motion_x == motion_y == 0
  moving = np.flatnonzero(is_moving)
  if moving.size == 0:
    return np.zeros((num_out, grid[0] * grid[1], 2))
  # Bi-predicted blocks: their vectors are averaged; the count of a block's predictions reads
  # its zero vectors too.
  mb_grid = -(-grid[0] // 2), -(-grid[1] // 2)
  predictions = (_predictions_per_block(vectors, slot, is_moving, mb_grid) if has_forward
                 else None)
  vectors, slot = _take(vectors, moving), slot[moving]

  # Signed px/frame per unit of motion_x / motion_y: -1 / scale for past references, +1 / scale
  # for future ones, divided by the reference distance.
  scale = vectors["motion_scale"]
  if per_vector:
    forward = vectors["source"] > 0
    factor = np.where(forward, 1.0, -1.0) / np.maximum(
        scale * np.where(forward, future[slot], past[slot]), 1.0)
    if predictions is not None:
      factor = factor / predictions
  elif np.all(scale == scale[0]):
    factor = -1.0 / max(float(scale[0]), 1.0)
  else:
    factor = -1.0 / np.maximum(scale, 1.0)
  return _scatter_numpy(vectors, slot, factor, rounds, grid, num_out)


def _scatter_numpy(vectors: np.ndarray, slot: np.ndarray, factor: np.ndarray | float,
                   rounds: list[tuple[np.ndarray, np.ndarray]], grid: tuple[int, int],
                   num_out: int) -> np.ndarray:
  """float64 [T, Gh * Gw, 2]: the fields of `vectors_to_flow` from its moving vectors.

  Args:
    vectors: [N] the moving vectors (`MOTION_VECTOR_DTYPE`).
    slot: int [N], each vector's frame.
    factor: float64 [N] or one float: px/frame per unit of motion_x / motion_y.
    rounds: `_rounds` of the weights.
    grid: (Gh, Gw).
    num_out: T.
  """
  mbh, mbw = -(-grid[0] // 2), -(-grid[1] // 2)
  num_mb = mbh * mbw
  dst_x, dst_y = vectors["dst_x"], vectors["dst_y"]
  bw, bh = vectors["w"], vectors["h"]
  col, row = dst_x >> 4, dst_y >> 4
  is_mb = ((bw == 16) & (bh == 16) & ((((dst_x ^ 8) | (dst_y ^ 8)) & 15) == 0)
           & (col.view(np.uint16) < mbw) & (row.view(np.uint16) < mbh))
  # 16x16 macroblocks (nearly all blocks) take one bin on the macroblock grid (Gh/2 x Gw/2,
  # upsampled at the end); the other blocks are added to the cells they cover.
  mb_bin = np.where(is_mb, row.astype(np.int64) * mbw + col, num_mb)  # else: a dummy bin
  rest = np.flatnonzero(~is_mb)
  if rest.size:
    rest_block, rest_cell = _cell_bins(dst_x[rest], dst_y[rest], bw[rest], bh[rest], grid)
    rest_block = rest[rest_block]

  used = np.zeros(rounds[0][0].size, bool)
  used[slot] = True
  mx, my = vectors["motion_x"], vectors["motion_y"]
  num_cells = grid[0] * grid[1]
  mb_entries, cell_entries = ([], [], []), ([], [], [])  # (bins, dx, dy)
  for out_of, w_of in rounds:
    if (out_of[used] >= 0).all():
      sel = slice(None)
    else:
      sel = np.flatnonzero(out_of[slot] >= 0)
    scaled = w_of[slot[sel]] * (factor if np.isscalar(factor) else factor[sel])
    for entries, values in zip(mb_entries, (out_of[slot[sel]] * (num_mb + 1) + mb_bin[sel],
                                            mx[sel] * scaled, my[sel] * scaled)):
      entries.append(values)
    if rest.size:
      out = out_of[slot[rest_block]]
      keep = out >= 0
      block = rest_block[keep]
      scaled = w_of[slot[block]] * (factor if np.isscalar(factor) else factor[block])
      for entries, values in zip(cell_entries, (out[keep] * num_cells + rest_cell[keep],
                                                mx[block] * scaled, my[block] * scaled)):
        entries.append(values)

  # Sums per macroblock, both channels side by side, copied to their 2 x 2 cells in one pass;
  # then the other blocks, added one by one in a fixed order (float64 throughout).
  mb_bins = np.concatenate(mb_entries[0])
  sums = np.stack([np.bincount(mb_bins, np.concatenate(mb_entries[1 + c]),
                               minlength=num_out * (num_mb + 1)) for c in range(2)], axis=-1)
  field = _upsample_macroblocks(sums.reshape(num_out, num_mb + 1, 2), grid)
  if rest.size:
    cell_bins = np.concatenate(cell_entries[0]) * 2
    np.add.at(field.reshape(-1), np.concatenate([cell_bins, cell_bins + 1]),
              np.concatenate(cell_entries[1] + cell_entries[2]))
  return field


def frame_flow(
    vectors: np.ndarray | None,
    height: int,
    width: int,
    *,
    past_distance: float = 1.0,
    future_distance: float = 1.0,
) -> np.ndarray:
  """float32 [Gh, Gw, 2]: one frame's velocity field (zeros if `vectors` is None or empty)."""
  return vectors_to_flow(
      [vectors], np.ones((1, 1), np.float32), height, width,
      past_distance=np.array([past_distance], np.float32),
      future_distance=np.array([future_distance], np.float32))[0]


def luma_absdiff_cells(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
  """float32 [Gh, Gw]: mean |current - previous| per grid cell of two uint8 [H, W] luma planes.

  Partial cells at the right / bottom edge average over the pixels they contain.
  """
  height, width = current.shape
  gh, gw = grid_shape(height, width)
  diff = np.maximum(current, previous)
  diff -= np.minimum(current, previous)
  if height % CELL or width % CELL:
    padded = np.zeros((gh * CELL, gw * CELL), np.uint8)
    padded[:height, :width] = diff
    diff = padded
  # Sum the 8 rows of each cell first (a reduction over a middle axis runs over whole rows), then
  # the 8 columns of the 8x smaller result. uint16 holds 8 x 255; uint32 holds 64 x 255.
  rows = diff.reshape(gh, CELL, gw * CELL).sum(axis=1, dtype=np.uint16)
  sums = rows.reshape(gh, gw, CELL).sum(axis=2, dtype=np.uint32)
  if height % CELL or width % CELL:
    cell_rows = np.minimum(height - np.arange(gh) * CELL, CELL)
    cell_cols = np.minimum(width - np.arange(gw) * CELL, CELL)
    return (sums / (cell_rows[:, None] * cell_cols[None, :])).astype(np.float32)
  return sums.astype(np.float32) * np.float32(1.0 / (CELL * CELL))


def accumulate(per_frame: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """float32 [T, ...]: `weights` [T, F] applied to per-frame values [F, ...].

  Sums over the nonzero weights only (no BLAS: a multi-threaded BLAS call costs milliseconds on a
  busy machine for this tiny, sparse product).
  """
  per_frame = np.asarray(per_frame, np.float32)
  weights = np.asarray(weights, np.float32)
  flat = per_frame.reshape(per_frame.shape[0], -1)
  out = np.zeros((weights.shape[0], flat.shape[1]), np.float32)
  rows, cols = np.nonzero(weights)
  if rows.size:
    contrib = flat[cols] * weights[rows, cols][:, None]
    present, starts = np.unique(rows, return_index=True)
    out[present] = np.add.reduceat(contrib, starts, axis=0)
  return out.reshape(weights.shape[0], *per_frame.shape[1:])


# Camera fit (`fit_camera_motion`): rows with fewer covered cells than this (coverage summed) are
# not compensated; the affine model needs this many inlier cells, else translation only.
_MIN_CAMERA_CELLS = 8.0
_MIN_AFFINE_CELLS = 12
_MIN_AFFINE_SPREAD = 1e-2  # det / prod(diag) of the normal matrix: below, cells are collinear
_CAMERA_ITERATIONS = 3
_TUKEY_SCALE = 3.0  # Tukey cutoff = this x the median residual length, but at least:
_MIN_CUTOFF = 0.5  # px/frame (codec vectors are quarter-pel; B-frame estimates are coarser)


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """float64 [R]: the median of each row's values where `mask` [R, N] (0 for an empty row)."""
  count = mask.sum(axis=1)
  ordered = np.sort(np.where(mask, values, np.inf), axis=1)
  lo = np.take_along_axis(ordered, np.maximum(count - 1, 0)[:, None] // 2, axis=1)[:, 0]
  hi = np.take_along_axis(ordered, np.minimum(count // 2, values.shape[1] - 1)[:, None],
                          axis=1)[:, 0]
  return np.where(count > 0, 0.5 * (lo + hi), 0.0)


def _cell_coordinates(grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
  """(x [N], y [N], s): each cell's centre minus the grid's centre, in pixels / s, with
  s = half the larger grid side in pixels, so x, y lie in [-1, 1] (well-conditioned fits)."""
  gh, gw = grid
  half = CELL * max(gh, gw) / 2.0
  y, x = np.mgrid[0:gh, 0:gw]
  x = (CELL * (x.ravel() + 0.5) - CELL * gw / 2.0) / half
  y = (CELL * (y.ravel() + 0.5) - CELL * gh / 2.0) / half
  return x, y, half


def _solve3(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Batched 3x3 solve by the adjugate (no LAPACK/BLAS call for tiny systems).

  Args:
    a: [R, 3, 3] symmetric positive semi-definite normal matrices.
    b: [R, 3, 2] right-hand sides.

  Returns:
    (solution [R, 3, 2], spread [R]): spread = det(a) / prod(diag(a)) in [0, 1] (1: the
    regressors are uncorrelated, 0: collinear); the solution is 0 where det(a) is 0.
  """
  adj = np.empty_like(a)
  for i in range(3):
    for j in range(3):
      r0, r1 = [k for k in range(3) if k != j]
      c0, c1 = [k for k in range(3) if k != i]
      adj[:, i, j] = (-1) ** (i + j) * (a[:, r0, c0] * a[:, r1, c1] - a[:, r0, c1] * a[:, r1, c0])
  det = (a[:, 0] * adj[:, :, 0]).sum(axis=1)
  diag = a[:, 0, 0] * a[:, 1, 1] * a[:, 2, 2]
  spread = np.where(diag > 0, det / np.where(diag > 0, diag, 1.0), 0.0)
  safe = np.where(det > 0, det, 1.0)
  solution = (adj[:, :, :, None] * b[:, None, :, :]).sum(axis=2) / safe[:, None, None]
  return np.where((det > 0)[:, None, None], solution, 0.0), spread


def _affine_step(fx: np.ndarray, fy: np.ndarray, cover: np.ndarray, w: np.ndarray,
                 x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One weighted least-squares solve of flow ~ cover x (P @ (1, x, y)) per row.

  Args:
    fx, fy, cover, w: [R, N] flow components, coverage and robust weights.
    x, y: [N] cell coordinates (`_cell_coordinates`).

  Returns:
    (affine P [R, 3, 2], translation-only P [R, 3, 2], spread [R] of `_solve3`).
  Plain products and row sums: several times faster than `einsum` here, and no BLAS.
  """
  wc = w * cover
  a = wc * cover
  ax, ay = a * x, a * y
  s1, sx, sy = a.sum(axis=1), ax.sum(axis=1), ay.sum(axis=1)
  sxx, sxy, syy = (ax * x).sum(axis=1), (ax * y).sum(axis=1), (ay * y).sum(axis=1)
  normal = np.stack([s1, sx, sy, sx, sxx, sxy, sy, sxy, syy], axis=1).reshape(-1, 3, 3)
  bx, by = wc * fx, wc * fy
  rhs = np.stack([bx.sum(axis=1), by.sum(axis=1), (bx * x).sum(axis=1), (by * x).sum(axis=1),
                  (bx * y).sum(axis=1), (by * y).sum(axis=1)], axis=1).reshape(-1, 3, 2)
  affine, spread = _solve3(normal, rhs)
  shift = np.zeros_like(rhs)
  shift[:, 0] = rhs[:, 0] / np.where(s1 > 0, s1, 1.0)[:, None]
  return affine, shift, spread


def fit_camera_motion(flow: np.ndarray, coverage: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Robust affine fit of each frame's global (camera) motion.

  Model, per frame: (dx, dy) = P @ (1, x - cx, y - cy) with (x, y) a cell's centre in pixels and
  (cx, cy) = (4 Gw, 4 Gh) the grid's centre: P[:, 0] is the background's velocity at the centre
  (minus the camera's pan), P[:, 1:] its gradient (zoom: P[0, 1] = P[1, 2] > 0 when the camera
  zooms in; rotation: P[1, 1] = -P[0, 2]; shear). A cell with coverage c measured c times the
  model (its uncovered frames count as 0 in `vectors_to_flow`), so the fit minimises
  sum_cells w |flow - c P @ (1, x, y)|^2 over the covered cells, with Tukey biweights w
  (cutoff: 3 x the median residual length, at least 0.5 px/frame), starting from the median
  velocity of the covered cells and iterated 3 times: cells moving otherwise (movers) do not
  bias it while they are well under half of the covered cells. Fewer than 12 inlier cells, or
  inliers (nearly) on one line: translation only (P[:, 1:] = 0). Coverage summing to less than
  8 cells: not fitted.

  Args:
    flow: float [..., Gh, Gw, 2] velocity fields, px/frame.
    coverage: float [..., Gh, Gw] in [0, 1] (`vectors_to_flow(..., with_coverage=True)`); None:
      every cell measured (e.g. dense optical flow).

  Returns:
    (P float32 [..., 2, 3] in px/frame and px/frame per px, fitted bool [...]); P is 0 where
    not fitted.
  """
  flow = np.asarray(flow, np.float32)
  if flow.ndim < 3 or flow.shape[-1] != 2:
    raise ValueError(f"flow must be [..., Gh, Gw, 2], got shape {flow.shape}")
  lead, grid = flow.shape[:-3], flow.shape[-3:-1]
  num_cells = grid[0] * grid[1]
  f = flow.reshape(-1, num_cells, 2).astype(np.float64)
  fx, fy = f[..., 0], f[..., 1]
  if coverage is None:
    cover = np.ones(fx.shape)
  else:
    coverage = np.asarray(coverage)
    if coverage.shape != flow.shape[:-1]:
      raise ValueError(f"coverage must be {flow.shape[:-1]} (flow without its last axis), "
                       f"got shape {coverage.shape}")
    cover = np.clip(coverage.reshape(-1, num_cells).astype(np.float64), 0.0, 1.0)
  x, y, half = _cell_coordinates(grid)
  fitted = cover.sum(axis=1) >= _MIN_CAMERA_CELLS
  measured = (cover > 0) & fitted[:, None]
  params = np.zeros((fx.shape[0], 3, 2))
  inverse = 1.0 / np.where(cover > 0, cover, 1.0)
  params[:, 0, 0] = _masked_median(fx * inverse, measured)  # start: the median velocity
  params[:, 0, 1] = _masked_median(fy * inverse, measured)
  cover_x, cover_y, in_fit = cover * x, cover * y, measured.astype(np.float64)
  for _ in range(_CAMERA_ITERATIONS):
    p = params[:, :, :, None]  # [R, 3, 2, 1]
    rx = fx - (p[:, 0, 0] * cover + p[:, 1, 0] * cover_x + p[:, 2, 0] * cover_y)
    ry = fy - (p[:, 0, 1] * cover + p[:, 1, 1] * cover_x + p[:, 2, 1] * cover_y)
    squared = rx * rx + ry * ry
    cutoff = np.maximum(_TUKEY_SCALE * _masked_median(squared, measured) ** 0.5, _MIN_CUTOFF)
    u2 = np.minimum(squared * (1.0 / (cutoff * cutoff))[:, None], 1.0)
    w = (1.0 - u2) ** 2 * in_fit  # Tukey's biweight
    affine, shift, spread = _affine_step(fx, fy, cover, w, x, y)
    use_affine = ((w > 0).sum(axis=1) >= _MIN_AFFINE_CELLS) & (spread >= _MIN_AFFINE_SPREAD)
    params = np.where(use_affine[:, None, None], affine, shift)
  params[~fitted] = 0.0
  out = params.transpose(0, 2, 1) * np.array([1.0, 1.0 / half, 1.0 / half])  # to pixel units
  return out.astype(np.float32).reshape(*lead, 2, 3), fitted.reshape(lead)


def camera_field(params: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """float32 [..., Gh, Gw, 2]: the velocity fields of `fit_camera_motion`'s models [..., 2, 3]."""
  params = np.asarray(params, np.float64)
  x, y, half = _cell_coordinates(grid)
  x, y = x * half, y * half  # back to pixels
  flat = params.reshape(-1, 2, 3)
  field = flat[:, :, 0, None] + flat[:, :, 1, None] * x + flat[:, :, 2, None] * y  # [R, 2, N]
  return field.transpose(0, 2, 1).astype(np.float32).reshape(*params.shape[:-2], *grid, 2)


def magnitude(flow: np.ndarray, compensate_camera: bool = False,
              coverage: np.ndarray | None = None) -> np.ndarray:
  """float32 [..., Gh, Gw]: the length of each flow vector [..., Gh, Gw, 2].

  Args:
    flow: velocity fields.
    compensate_camera: subtract each frame's global (camera) motion first: the robust affine
      model of `fit_camera_motion` (pan, zoom, rotation, shear), fitted on the covered cells and
      subtracted as measured, i.e. scaled by each cell's coverage: a cell no vector covered keeps
      magnitude 0 (nothing was measured there; it does not light up with the camera's motion),
      a cell covered in part of its interval loses the camera motion of that part only. Frames
      with too few covered cells to fit are left as they are. (The paper names heavy camera
      motion as MGM's limitation.)
    coverage: float [..., Gh, Gw] in [0, 1] from `vectors_to_flow(..., with_coverage=True)`,
      for `compensate_camera`; None = every cell measured (dense flow). Ignored without it.
  """
  flow = np.asarray(flow, np.float32)
  if compensate_camera:
    params, fitted = fit_camera_motion(flow, coverage)
    field = camera_field(params, flow.shape[-3:-1])
    if coverage is not None:
      field = field * np.asarray(coverage, np.float32)[..., None]
    flow = np.where(fitted[..., None, None, None], flow - field, flow)
  return np.sqrt(flow[..., 0] * flow[..., 0] + flow[..., 1] * flow[..., 1])


def to_token_slots(magnitude_: np.ndarray, tubelet: int) -> np.ndarray:
  """float32 [T // tubelet, Gh, Gw]: mean over each tubelet's frames (a trailing rest is dropped).

  This is the `motion=` input of `mgm_jax.masking.make_mask`.
  """
  magnitude_ = np.asarray(magnitude_, np.float32)
  if tubelet < 1:
    raise ValueError(f"tubelet must be >= 1, got {tubelet}")
  slots = magnitude_.shape[0] // tubelet
  trimmed = magnitude_[: slots * tubelet]
  return trimmed.reshape(slots, tubelet, *magnitude_.shape[1:]).mean(axis=1, dtype=np.float32)
