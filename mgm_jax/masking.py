"""Token masks for video masked autoencoders: MGM and the baselines of the paper's Table 4e.

Pure NumPy (no JAX), so the input pipeline's worker processes can build masks next to decoding.

One entry point:

    mask = make_mask("mgm", grid=(8, 14, 14), mask_ratio=0.75, rng=rng, motion=slots)

returns bool [t, h, w] with True = masked. `motion` is a motion-magnitude map per temporal token
slot, [t, mh, mw] at any spatial resolution (e.g. the 8-px motion grid pooled over each tubelet:
`input_pipeline.motion.to_token_slots`). Token (i, j) covers the continuous token-coordinate square
[j, j + 1) x [i, i + 1); a motion cell (a, b) of an mh x mw map has its centre at
((b + 0.5) w / mw, (a + 0.5) h / mh) in those coordinates (nearest-neighbour upsampling, Eq. 6).

Strategies (the paper's names in brackets):
  random      [Random, ST-MAE]   round(r·t·h·w) tokens anywhere in the clip.
  tube        [Random Tube, VideoMAE]  round(r·h·w) random spatial tokens, the same in every slot.
  block       [Random Block]     a static dense square-ish box of round(r·h·w) tokens at a random
                                 place, the same in every slot.
  smm         [SMM (Dense)]      Eq. 5: a dense box of round(r·h·w) tokens per slot, starting at a
                                 random place and moving with a random velocity (drawn once per
                                 clip, plus a per-slot perturbation of up to a quarter of it),
                                 reflecting off the borders, with aspect-ratio jitter.
  smm_sparse  [SMM (Sparse)]     the same trajectory, but the tokens are scattered (see "Sparse").
  mgm         [MGM (Dense)]      Eq. 7: a dense box of round(r·h·w) tokens per slot centred on the
                                 top-1 motion location of that slot (or another `pool`, see
                                 "Motion guidance"), with aspect-ratio jitter.
  mgm_sparse  [MGM (Sparse)]     the same centres, scattered tokens.

Exact counts. The encoder's visible-token count must be static under `jit`, so every strategy
masks exactly `num_masked(strategy, grid, mask_ratio)` tokens for every clip, and the per-slot
strategies (all but `random`) exactly round(r·h·w) tokens in every slot. The paper's boxes
(w0 = h0 = sqrt(r·H/h·W/w), Eqs. 5 and 7) have non-integer sides, may cross the borders, and its
jitter changes width and height independently, so their area is only approximately constant. Here
a box is made exact and dense as follows, for a per-slot count n and a wanted aspect a = w/h:

  1. sides: bw = clip(round(sqrt(n·a)), 1, W), bh = ceil(n / bw); if bh > h the box is turned
     round: bh = h, bw = ceil(n / h). So bw·bh ≥ n, and the surplus bw·bh − n is less than one
     line of the box (a row, or a column in the turned case).
  2. place: the box is centred on the wanted centre and then shifted (not cut) to lie inside the
     grid; the wanted centre always stays inside the box.
  3. trim: the surplus cells are removed from the edge line (row, or column when turned) farther
     from the wanted centre; the cells kept on that line are contiguous and centred on the centre
     as far as the box allows. The result is a rectangle with at most one partial edge line:
     still one dense, 4-connected region.

Aspect jitter (Eq. 7's s_xt, s_yt): the box's nominal width and height start at sqrt(n) and each
take a random step in [-jitter, jitter] tokens per slot, the steps summing to zero over the clip
(so the last slot returns to the start); their ratio, clipped to [1/3, 3], is the wanted aspect
in step 1 (the count stays n). `jitter=0` turns it off (Table 4c's "no").

Sparse. The paper calls a mask sparse when it "may be spatially discontinuous". Here the sparse
variants keep the dense variant's count and trajectory (the same centre per slot) but draw the n
tokens of a slot without replacement with probability weights exp(-d² / (2σ²)), d being the
token's distance to the centre and σ = sqrt(n) / 3 (a third of the dense box's side): the mask
follows the same motion (the arg-max token is masked in >90% of slots at ratio 0.3, ~99% at 0.75)
but is scattered around it, typically in 5-9 separate pieces on a 14x14 grid.

Motion guidance (mgm, mgm_sparse). Each slot's centre comes from that slot's motion map, after
two optional steps; non-finite magnitudes count as 0 throughout.

  smooth = s (default 0, off): each slot's map is replaced by the mean of the maps of the slots
    within +-s of it, clipped at the clip's ends (slot i averages slots max(i - s, 0) ..
    min(i + s, t - 1)), so a peak present in a single slot pulls the centre less.
  pool (default "top1") turns a slot's (smoothed) map into a centre in token coordinates:
    top1      Eq. 7's Pool_top1: the centre of the arg-max cell.
    box       the centre of the box of cells holding the most motion: a box-sum filter over
              every placement of a kh x kw-cell box inside the map (all placements at once, as
              two band-matrix products; an integral image's cumulative sums are ~5x slower in
              NumPy at these sizes). The box is the dense box's nominal square, sqrt(n) x sqrt(n)
              tokens (a side longer than the grid is cut to the grid and the other stretched to
              keep the area n), in cells: kh = clip(round(sh·mh / h), 1, mh) and
              kw = clip(round(sw·mw / w), 1, mw). Its centre is the box's geometric centre:
              cells [a0, a0 + kh) x [b0, b0 + kw) give ((b0 + kw / 2) w / mw, (a0 + kh / 2) h / mh),
              i.e. the middle cell's centre for an odd side and the edge between the two middle
              cells for an even one (no bias to either side). Unlike top1 it prefers a large
              moving region over a single bright cell (a codec outlier).
    centroid  the motion-weighted mean of the cell centres (negative values count as 0; a slot
              with no positive value counts as no motion). Known weakness: with several movers
              the centre falls between them, possibly on none of them.
  Ties of the maximum are broken at random (uniformly among the tied cells or placements).
  top1 ties are exactly equal cells; box ties are placements whose sum is within a relative 1e-9
  of the slot's best (so that float rounding does not decide). When the motion fits in the box
  with room to spare, every placement holding all of it ties: the region is covered, but the
  centre is drawn among those placements rather than put on the region's middle.
A slot whose maximum (smoothed) magnitude is not above `motion_threshold` has no motion: it keeps
the previous moving slot's centre; slots before the first moving one, or all slots when none
moves, use a random start (Eq. 7's random x0, y0), so a static clip degrades to a `block`. Every
pool feeds the same box construction (dense or sparse, above), so the exact counts hold for all.
With the defaults (top1, smooth 0) the masks and the random draws are those of Eq. 7 as before.
"""

from __future__ import annotations

import functools
import math

import numpy as np

STRATEGIES = ("random", "tube", "block", "smm", "smm_sparse", "mgm", "mgm_sparse")
MOTION_STRATEGIES = ("mgm", "mgm_sparse")
POOLS = ("top1", "box", "centroid")
_MAX_ASPECT = 3.0
_BOX_TIE = 1e-9  # box sums within this fraction of a slot's best count as tied (rounding)


def _check(strategy: str, grid: tuple[int, int, int], mask_ratio: float) -> None:
  if strategy not in STRATEGIES:
    raise ValueError(f"mask strategy {strategy!r} is unknown; choose one of {STRATEGIES}")
  if len(grid) != 3 or any(int(g) != g or g < 1 for g in grid):
    raise ValueError(f"mask grid must be three positive ints (t, h, w), got {grid!r}")
  if not 0.0 < mask_ratio < 1.0:
    raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio!r}")


def _check_guidance(pool: str, smooth: int) -> None:
  if pool not in POOLS:
    raise ValueError(f"mask pool {pool!r} is unknown; choose one of {POOLS}")
  if not isinstance(smooth, (int, np.integer)) or isinstance(smooth, bool) or smooth < 0:
    raise ValueError(f"mask smooth must be an int >= 0 (slots each side), got {smooth!r}")


def masked_per_slot(grid: tuple[int, int, int], mask_ratio: float) -> int:
  """Tokens masked in each temporal slot by the per-slot strategies: round(r·h·w)."""
  _, h, w = grid
  n = int(round(mask_ratio * h * w))
  if not 0 < n < h * w:
    raise ValueError(
        f"mask_ratio {mask_ratio} on a {h}x{w} token grid masks {n} of {h * w} tokens per slot; "
        "at least one token must be masked and one visible")
  return n


def num_masked(strategy: str, grid: tuple[int, int, int], mask_ratio: float) -> int:
  """The exact number of masked tokens per clip (static: the encoder sees the rest)."""
  _check(strategy, grid, mask_ratio)
  t, h, w = grid
  if strategy == "random":
    n = int(round(mask_ratio * t * h * w))
    if not 0 < n < t * h * w:
      raise ValueError(f"mask_ratio {mask_ratio} on grid {grid} masks {n} tokens: none visible "
                       "or none masked")
    return n
  return t * masked_per_slot(grid, mask_ratio)


def make_mask(
    strategy: str,
    grid: tuple[int, int, int],
    mask_ratio: float,
    rng: np.random.Generator | int,
    motion: np.ndarray | None = None,
    *,
    jitter: float = 1.0,
    speed: float = 1.0,
    motion_threshold: float = 0.0,
    pool: str = "top1",
    smooth: int = 0,
) -> np.ndarray:
  """Builds one clip's token mask.

  Args:
    strategy: one of STRATEGIES (see the module docstring).
    grid: (t, h, w) token grid, e.g. (8, 14, 14) for 16x224x224 with 2x16x16 tubelets.
    mask_ratio: fraction of tokens masked, in (0, 1).
    rng: a NumPy Generator (or an int seed); the only source of randomness.
    motion: [t, mh, mw] non-negative motion magnitude per temporal slot, any spatial size.
      Required by mgm / mgm_sparse, ignored by the others.
    jitter: largest per-slot step of the box's nominal width/height, in tokens (0: none).
    speed: smm's largest velocity, in tokens per slot.
    motion_threshold: magnitudes at or below this count as no motion (mgm).
    pool: how mgm turns a slot's motion map into a box centre, one of POOLS ("top1": Eq. 7).
    smooth: mgm averages each slot's map with the maps of the `smooth` slots on each side
      before pooling (0: off).

  Returns:
    bool [t, h, w], True = masked, with exactly num_masked(strategy, grid, mask_ratio) Trues.
  """
  _check(strategy, grid, mask_ratio)
  _check_guidance(pool, smooth)
  t, h, w = (int(g) for g in grid)
  rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng

  if strategy == "random":
    n = num_masked(strategy, grid, mask_ratio)
    return _top_k_mask(rng.random((1, t * h * w)), n).reshape(t, h, w)

  n = masked_per_slot(grid, mask_ratio)
  if strategy == "tube":
    return np.broadcast_to(_top_k_mask(rng.random((1, h * w)), n).reshape(1, h, w),
                           (t, h, w)).copy()
  side = min(math.sqrt(n), float(w)), min(math.sqrt(n), float(h))
  if strategy == "block":
    cx, cy = _random_start(rng, h, w, side)
    ones = np.ones(t)
    return _dense_boxes(cx * ones, cy * ones, [1.0] * t, n, h, w)

  if strategy.startswith("smm"):
    cx, cy = _smm_trajectory(rng, t, h, w, side, speed)
  else:
    cx, cy = _mgm_centres(rng, motion, t, h, w, n, motion_threshold, pool, int(smooth))
  if strategy.endswith("_sparse"):
    _jitter_steps(rng, t, jitter)  # drawn but unused: both variants share one random stream
    return _sparse_masks(rng, cx, cy, n, h, w)
  return _dense_boxes(cx, cy, _jittered_aspect(rng, t, n, jitter), n, h, w)


def _top_k_mask(keys: np.ndarray, k: int) -> np.ndarray:
  """bool mask of each row's k largest keys (rows: independent draws).

  Fast path: every key at or above the row's k-th largest (a partition, ~4x faster than an
  arg-partition and a scatter); only when a row has ties at that key does it fall back to the
  arg-partition, which keeps exactly k.
  """
  cut = keys.shape[1] - k
  out = keys >= np.partition(keys, cut, axis=1)[:, cut:cut + 1]
  if np.count_nonzero(out) == keys.shape[0] * k:
    return out
  idx = np.argpartition(-keys, k - 1, axis=1)[:, :k]
  out = np.zeros(keys.shape, bool)
  np.put_along_axis(out, idx, True, axis=1)
  return out


def _random_start(rng, h, w, side):
  """A random box centre with the box inside the grid: the paper's x0, y0 ~ rand(0, W - w0)."""
  sw, sh = side
  return rng.uniform(sw / 2, w - sw / 2), rng.uniform(sh / 2, h - sh / 2)


def _jitter_steps(rng, t, jitter) -> list[list[float]] | None:
  """The random per-slot steps of the box's nominal width and height (None: no jitter)."""
  if jitter <= 0 or t == 1:
    return None
  return rng.uniform(-jitter, jitter, size=(2, t - 1)).tolist()


def _jittered_aspect(rng, t, n, jitter) -> list[float]:
  """Eq. 7's width/height jitter as a per-slot aspect ratio; steps sum to zero over the clip.

  Plain Python floats: for the few slots of a clip this is several times faster than NumPy.
  """
  steps = _jitter_steps(rng, t, jitter)
  if steps is None:
    return [1.0] * t
  step_w, step_h = steps
  mean_w, mean_h = sum(step_w) / (t - 1), sum(step_h) / (t - 1)
  width = height = math.sqrt(n)
  aspect = [1.0]
  lo = 1 / _MAX_ASPECT
  for dw, dh in zip(step_w, step_h):  # clamps as conditionals: faster than min/max calls
    width += dw - mean_w
    height += dh - mean_h
    ratio = (width if width > 1.0 else 1.0) / (height if height > 1.0 else 1.0)
    aspect.append(lo if ratio < lo else (_MAX_ASPECT if ratio > _MAX_ASPECT else ratio))
  return aspect


def _reflect(p, lo, hi):
  """Folds positions into [lo, hi] as if bouncing off both ends."""
  span = hi - lo
  if span <= 0:
    return np.full_like(p, (lo + hi) / 2)
  q = np.mod(p - lo, 2 * span)
  return lo + np.where(q > span, 2 * span - q, q)


def _smm_trajectory(rng, t, h, w, side, speed):
  """Eq. 5: random start, a random velocity per clip plus per-slot perturbation, reflected."""
  x0, y0 = _random_start(rng, h, w, side)
  v = rng.uniform(-speed, speed, size=(2, 1)) + rng.uniform(-speed / 4, speed / 4, size=(2, t))
  v[:, 0] = 0.0
  path = np.cumsum(v, axis=1)
  sw, sh = side
  return _reflect(x0 + path[0], sw / 2, w - sw / 2), _reflect(y0 + path[1], sh / 2, h - sh / 2)


def _slot_maps(motion, t: int, smooth: int) -> np.ndarray:
  """The checked [t, mh, mw] motion maps, non-finite values as 0, smoothed over +-smooth slots."""
  if motion is None:
    raise ValueError("mask strategies mgm/mgm_sparse need `motion` ([t, mh, mw] magnitudes)")
  motion = np.asarray(motion)
  if motion.ndim != 3 or motion.shape[0] != t or motion.shape[1] < 1 or motion.shape[2] < 1:
    raise ValueError(f"motion must be [t={t}, mh, mw] magnitudes per temporal slot, "
                     f"got shape {motion.shape}")
  if not np.isfinite(motion).all():
    motion = np.nan_to_num(motion, nan=0.0, posinf=0.0, neginf=0.0)
  if smooth == 0 or t == 1:
    return motion
  return (_window_means(t, smooth) @ motion.reshape(t, -1)).reshape(motion.shape)


@functools.lru_cache(maxsize=64)
def _window_means(t: int, smooth: int) -> np.ndarray:
  """float64 [t, t]: row i averages slots max(i - smooth, 0) .. min(i + smooth, t - 1) (cached)."""
  slot = np.arange(t)
  window = np.abs(slot[:, None] - slot[None, :]) <= smooth
  weights = window / window.sum(axis=1, keepdims=True)
  weights.flags.writeable = False
  return weights


def _pick_max(rng, scores: np.ndarray, peak: np.ndarray, tol=None) -> np.ndarray:
  """Per row of [t, k] scores, the index of the row's maximum `peak`; ties (within tol) are
  broken at random: the pick-th tied cell in row-major order, pick uniform."""
  t, k = scores.shape
  ties = scores == peak[:, None] if tol is None else scores >= (peak - tol)[:, None]
  where = np.flatnonzero(ties)  # row-major; every row has at least one (its maximum)
  if where.size == t:  # no ties anywhere (the usual case)
    return where - np.arange(0, t * k, k)
  per_row = np.bincount(where // k, minlength=t)
  first = np.cumsum(per_row) - per_row
  tied = np.flatnonzero(per_row > 1)
  first[tied] += (rng.random(tied.size) * per_row[tied]).astype(np.int64)
  return where[first] % k


@functools.lru_cache(maxsize=64)
def _cell_centres(mh: int, mw: int, h: int, w: int) -> np.ndarray:
  """float64 [3, mh·mw]: 1, x and y of each motion cell's centre in token coordinates, cells in
  row-major order (read-only, cached)."""
  ys, xs = np.divmod(np.arange(mh * mw), mw)
  table = np.stack([np.ones(mh * mw), (xs + 0.5) * (w / mw), (ys + 0.5) * (h / mh)])
  table.flags.writeable = False
  return table


def _top1_centres(rng, maps, peak, h, w):
  """Eq. 7's Pool_top1: the arg-max motion cell per slot, in token coordinates."""
  t, mh, mw = maps.shape
  idx = _pick_max(rng, maps.reshape(t, -1), peak)
  _, xs, ys = _cell_centres(mh, mw, h, w)
  return xs[idx], ys[idx]


def _box_cells(n, h, w, mh, mw) -> tuple[int, int]:
  """(kh, kw): the dense box's nominal sqrt(n)-token square in motion cells, inside the map."""
  sw = sh = math.sqrt(n)
  if sh > h:
    sh, sw = h, min(n / h, w)
  elif sw > w:
    sw, sh = w, min(n / w, h)
  return min(max(round(sh * mh / h), 1), mh), min(max(round(sw * mw / w), 1), mw)


@functools.lru_cache(maxsize=64)
def _box_filter(n: int, h: int, w: int, mh: int, mw: int):
  """The box pool's constants (read-only, cached): band matrices [mh - kh + 1, mh] and
  [mw, mw - kw + 1] whose products with a map sum every kh x kw placement, and the token
  coordinates of each placement's centre, row-major."""
  kh, kw = _box_cells(n, h, w, mh, mw)

  def band(size, k):  # row a sums elements a .. a + k - 1
    start = np.arange(size - k + 1)[:, None]
    return ((np.arange(size) >= start) & (np.arange(size) < start + k)).astype(np.float64)

  a0, b0 = np.divmod(np.arange((mh - kh + 1) * (mw - kw + 1)), mw - kw + 1)
  arrays = (band(mh, kh), band(mw, kw).T, (b0 + kw / 2) * (w / mw), (a0 + kh / 2) * (h / mh))
  for a in arrays:
    a.flags.writeable = False
  return arrays


def _box_centres(rng, maps, h, w, n):
  """The centre of the kh x kw-cell box holding the most motion per slot (a box-sum filter)."""
  t, mh, mw = maps.shape
  rows, cols, xs, ys = _box_filter(n, h, w, mh, mw)
  # Every placement's sum at once as band-matrix products: ~5x faster than an integral image
  # (NumPy's cumulative sums do not vectorise), and no loop over cells.
  sums = (rows @ maps @ cols).reshape(t, -1)
  peak = sums.max(axis=1)
  idx = _pick_max(rng, sums, peak, _BOX_TIE * np.abs(peak))
  return xs[idx], ys[idx]


def _centroid_centres(maps, h, w):
  """The motion-weighted mean cell centre per slot, and whether the slot has any weight."""
  t, mh, mw = maps.shape
  total, x, y = _cell_centres(mh, mw, h, w) @ np.maximum(maps, 0).reshape(t, -1).T
  safe = np.where(total > 0, total, 1.0)
  return x / safe, y / safe, total > 0


def _mgm_centres(rng, motion, t, h, w, n, threshold, pool="top1", smooth=0):
  """Box centres per slot, in token coordinates, from the motion maps (module docstring)."""
  maps = _slot_maps(motion, t, smooth)
  peak = maps.reshape(t, -1).max(axis=1)
  moving = peak > threshold
  if pool == "top1":
    cx, cy = _top1_centres(rng, maps, peak, h, w)
  elif pool == "box":
    cx, cy = _box_centres(rng, maps, h, w, n)
  else:
    cx, cy, weighted = _centroid_centres(maps, h, w)
    moving &= weighted
  if moving.all():
    return cx, cy
  # Slots without motion hold the last moving slot's centre; before the first one (or when no
  # slot moves) the box starts at a random place, as Eq. 7 initialises x0, y0.
  side = min(math.sqrt(n), float(w)), min(math.sqrt(n), float(h))
  last = np.maximum.accumulate(np.where(moving, np.arange(t), -1))
  sx, sy = _random_start(rng, h, w, side)
  cx = np.where(last >= 0, cx[np.maximum(last, 0)], sx)
  cy = np.where(last >= 0, cy[np.maximum(last, 0)], sy)
  return cx, cy


def box_sides(n: int, h: int, w: int, aspect: float = 1.0) -> tuple[int, int, bool]:
  """(bw, bh, turned): the sides of a dense box of n tokens with wanted aspect w/h on an h x w
  grid (module docstring, step 1); `turned`: full height, the surplus trimmed from a column."""
  bw = round(math.sqrt(n * aspect))
  bw = 1 if bw < 1 else (w if bw > w else bw)
  bh = -(-n // bw)
  if bh > h:
    return -(-n // h), h, True
  return bw, bh, False


def _dense_boxes(cx, cy, aspect: list[float], n, h, w):
  """Exactly n tokens per slot as one dense box around (cx, cy); see the module docstring.

  A loop over slots with Python ints: for the small t of video MAEs this is several times
  faster than broadcasting over [t, h, w].
  """
  out = np.zeros((len(cx), h, w), bool)
  # Clamps as conditional expressions: builtin min/max calls are most of this loop's time.
  for slot, x, y, a in zip(out, cx.tolist(), cy.tolist(), aspect):
    bw, bh, turned = box_sides(n, h, w, a)
    x0 = round(x - bw / 2)
    x0 = 0 if x0 < 0 else (w - bw if x0 > w - bw else x0)
    y0 = round(y - bh / 2)
    y0 = 0 if y0 < 0 else (h - bh if y0 > h - bh else y0)
    surplus = bw * bh - n
    if not surplus:
      slot[y0:y0 + bh, x0:x0 + bw] = True
      continue
    # Trim the edge line farther from the centre, keeping a contiguous run of its cells that
    # is centred on the centre as far as the box allows: the other lines in full, then the run.
    if not turned:
      far = y - y0 > y0 + bh - y  # the top row is the farther one
      keep = bw - surplus
      run = round(x - keep / 2)
      run = x0 if run < x0 else (x0 + bw - keep if run > x0 + bw - keep else run)
      slot[y0 + far:y0 + bh - 1 + far, x0:x0 + bw] = True
      slot[y0 if far else y0 + bh - 1, run:run + keep] = True
    else:
      far = x - x0 > x0 + bw - x  # the left column is the farther one
      keep = bh - surplus
      run = round(y - keep / 2)
      run = y0 if run < y0 else (y0 + bh - keep if run > y0 + bh - keep else run)
      slot[y0:y0 + bh, x0 + far:x0 + bw - 1 + far] = True
      slot[run:run + keep, x0 if far else x0 + bw - 1] = True
  return out


def _sparse_masks(rng, cx, cy, n, h, w):
  """n tokens per slot drawn without replacement, Gaussian-weighted around (cx, cy)."""
  t = cx.shape[0]
  dx2 = (np.arange(w) + 0.5 - cx[:, None]) ** 2  # [t, w]
  dy2 = (np.arange(h) + 0.5 - cy[:, None]) ** 2  # [t, h]
  d2 = (dx2[:, None, :] + dy2[:, :, None]).reshape(t, h * w)
  sigma2 = n / 9.0  # sigma = sqrt(n) / 3
  # Gumbel-top-k: the k largest of log-weight + Gumbel noise are a weighted draw without
  # replacement. (In place: the same arithmetic as -d2 / (2σ²) - log(-log(u)), fewer copies.)
  gumbel = rng.random((t, h * w))
  np.log(gumbel, out=gumbel)
  np.negative(gumbel, out=gumbel)
  np.log(gumbel, out=gumbel)
  d2 /= -2 * sigma2  # == -d2 / (2σ²) exactly: negation commutes with IEEE division
  d2 -= gumbel
  return _top_k_mask(d2, n).reshape(t, h, w)
