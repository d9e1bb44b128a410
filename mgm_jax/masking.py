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
                                 top-1 motion location of that slot, with aspect-ratio jitter.
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

Motion guidance. In each slot the centre is the motion map's arg-max cell (Pool_top1 of Eq. 7;
ties broken at random). A slot whose maximum magnitude is not above `motion_threshold` has no
motion: it keeps the previous slot's centre; slots before the first moving one, or all slots when
none moves, use a random start (Eq. 7's random x0, y0), so a static clip degrades to a `block`.
"""

from __future__ import annotations

import math

import numpy as np

STRATEGIES = ("random", "tube", "block", "smm", "smm_sparse", "mgm", "mgm_sparse")
MOTION_STRATEGIES = ("mgm", "mgm_sparse")
_MAX_ASPECT = 3.0


def _check(strategy: str, grid: tuple[int, int, int], mask_ratio: float) -> None:
  if strategy not in STRATEGIES:
    raise ValueError(f"mask strategy {strategy!r} is unknown; choose one of {STRATEGIES}")
  if len(grid) != 3 or any(int(g) != g or g < 1 for g in grid):
    raise ValueError(f"mask grid must be three positive ints (t, h, w), got {grid!r}")
  if not 0.0 < mask_ratio < 1.0:
    raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio!r}")


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

  Returns:
    bool [t, h, w], True = masked, with exactly num_masked(strategy, grid, mask_ratio) Trues.
  """
  _check(strategy, grid, mask_ratio)
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
    cx, cy = _mgm_centres(rng, motion, t, h, w, side, motion_threshold)
  aspect = _jittered_aspect(rng, t, n, jitter)
  if strategy.endswith("_sparse"):
    return _sparse_masks(rng, cx, cy, n, h, w)
  return _dense_boxes(cx, cy, aspect, n, h, w)


def _top_k_mask(keys: np.ndarray, k: int) -> np.ndarray:
  """bool mask of each row's k largest keys (rows: independent draws)."""
  idx = np.argpartition(-keys, k - 1, axis=1)[:, :k]
  out = np.zeros(keys.shape, bool)
  np.put_along_axis(out, idx, True, axis=1)
  return out


def _random_start(rng, h, w, side):
  """A random box centre with the box inside the grid: the paper's x0, y0 ~ rand(0, W - w0)."""
  sw, sh = side
  return rng.uniform(sw / 2, w - sw / 2), rng.uniform(sh / 2, h - sh / 2)


def _jittered_aspect(rng, t, n, jitter) -> list[float]:
  """Eq. 7's width/height jitter as a per-slot aspect ratio; steps sum to zero over the clip.

  Plain Python floats: for the few slots of a clip this is several times faster than NumPy.
  """
  if jitter <= 0 or t == 1:
    return [1.0] * t
  step_w, step_h = rng.uniform(-jitter, jitter, size=(2, t - 1)).tolist()
  mean_w, mean_h = sum(step_w) / (t - 1), sum(step_h) / (t - 1)
  width = height = math.sqrt(n)
  aspect = [1.0]
  for dw, dh in zip(step_w, step_h):
    width += dw - mean_w
    height += dh - mean_h
    aspect.append(min(max(max(width, 1.0) / max(height, 1.0), 1 / _MAX_ASPECT), _MAX_ASPECT))
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


def _mgm_centres(rng, motion, t, h, w, side, threshold):
  """Eq. 7's Pool_top1: the arg-max motion cell per slot, in token coordinates."""
  if motion is None:
    raise ValueError("mask strategies mgm/mgm_sparse need `motion` ([t, mh, mw] magnitudes)")
  motion = np.asarray(motion)
  if motion.ndim != 3 or motion.shape[0] != t or motion.shape[1] < 1 or motion.shape[2] < 1:
    raise ValueError(f"motion must be [t={t}, mh, mw] magnitudes per temporal slot, "
                     f"got shape {motion.shape}")
  flat = motion.reshape(t, -1)
  if not np.isfinite(flat).all():
    flat = np.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
  peak = flat.max(axis=1)
  ties = flat == peak[:, None]
  idx = np.argmax(ties, axis=1)
  tied = np.flatnonzero(ties.sum(axis=1) > 1)
  if tied.size:  # several cells share the maximum: pick one of them at random
    count = np.cumsum(ties[tied], axis=1)
    pick = (rng.random(tied.size) * count[:, -1]).astype(np.int64) + 1
    idx[tied] = np.argmax(count >= pick[:, None], axis=1)
  mh, mw = motion.shape[1:]
  cy = (idx // mw + 0.5) * (h / mh)
  cx = (idx % mw + 0.5) * (w / mw)
  moving = peak > threshold
  if moving.all():
    return cx, cy
  # Slots without motion hold the last moving slot's centre; before the first one (or when no
  # slot moves) the box starts at a random place, as Eq. 7 initialises x0, y0.
  last = np.maximum.accumulate(np.where(moving, np.arange(t), -1))
  sx, sy = _random_start(rng, h, w, side)
  cx = np.where(last >= 0, cx[np.maximum(last, 0)], sx)
  cy = np.where(last >= 0, cy[np.maximum(last, 0)], sy)
  return cx, cy


def _dense_boxes(cx, cy, aspect: list[float], n, h, w):
  """Exactly n tokens per slot as one dense box around (cx, cy); see the module docstring.

  A loop over slots with Python ints: for the small t of video MAEs this is several times
  faster than broadcasting over [t, h, w].
  """
  out = np.zeros((len(cx), h, w), bool)
  for i, (x, y, a) in enumerate(zip(cx.tolist(), cy.tolist(), aspect)):
    bw = min(max(round(math.sqrt(n * a)), 1), w)
    bh = -(-n // bw)
    turned = bh > h  # too tall for the grid: full height, surplus trimmed from a column
    if turned:
      bh, bw = h, -(-n // h)
    x0 = min(max(round(x - bw / 2), 0), w - bw)
    y0 = min(max(round(y - bh / 2), 0), h - bh)
    out[i, y0:y0 + bh, x0:x0 + bw] = True
    surplus = bw * bh - n
    if not surplus:
      continue
    # Trim the edge line farther from the centre, keeping a contiguous run of its cells that
    # is centred on the centre as far as the box allows.
    if not turned:
      row = y0 if y - y0 > y0 + bh - y else y0 + bh - 1
      keep = bw - surplus
      run = min(max(round(x - keep / 2), x0), x0 + bw - keep)
      out[i, row, x0:run] = False
      out[i, row, run + keep:x0 + bw] = False
    else:
      col = x0 if x - x0 > x0 + bw - x else x0 + bw - 1
      keep = bh - surplus
      run = min(max(round(y - keep / 2), y0), y0 + bh - keep)
      out[i, y0:run, col] = False
      out[i, run + keep:y0 + bh, col] = False
  return out


def _sparse_masks(rng, cx, cy, n, h, w):
  """n tokens per slot drawn without replacement, Gaussian-weighted around (cx, cy)."""
  t = cx.shape[0]
  ys, xs = np.divmod(np.arange(h * w), w)
  d2 = (xs[None] + 0.5 - cx[:, None]) ** 2 + (ys[None] + 0.5 - cy[:, None]) ** 2
  sigma2 = n / 9.0  # sigma = sqrt(n) / 3
  # Gumbel-top-k: the k largest of log-weight + Gumbel noise are a weighted draw without
  # replacement.
  keys = -d2 / (2 * sigma2) - np.log(-np.log(rng.random((t, h * w))))
  return _top_k_mask(keys, n).reshape(t, h, w)
