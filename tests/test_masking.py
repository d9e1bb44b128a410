"""Tests of mgm_jax/masking.py: exact counts, shapes of each strategy, motion guidance, errors."""

import subprocess
import sys

import numpy as np
import pytest

from mgm_jax import masking

GRIDS = [(8, 14, 14), (8, 7, 7), (4, 4, 4), (3, 5, 13), (2, 1, 9), (8, 7, 3)]
RATIOS = [0.5, 0.75, 0.9]
DENSE = ("block", "smm", "mgm")


def _motion(grid, seed, size=(6, 5)):
  return np.random.default_rng(seed).random((grid[0], *size)).round(1)


def _components(slot: np.ndarray) -> int:
  """Number of 4-connected components of True cells (a tiny flood fill)."""
  seen = np.zeros_like(slot)
  count = 0
  for start in zip(*np.nonzero(slot)):
    if seen[start]:
      continue
    count += 1
    stack = [start]
    seen[start] = True
    while stack:
      y, x = stack.pop()
      for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
        if 0 <= yy < slot.shape[0] and 0 <= xx < slot.shape[1] and slot[yy, xx] and not seen[yy, xx]:
          seen[yy, xx] = True
          stack.append((yy, xx))
  return count


def _is_box_with_one_partial_edge(slot: np.ndarray) -> bool:
  """True if the cells form their bounding box minus part of one edge row or column."""
  ys, xs = np.nonzero(slot)
  box = slot[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
  partial_rows = [i for i in range(box.shape[0]) if not box[i].all()]
  partial_cols = [j for j in range(box.shape[1]) if not box[:, j].all()]
  if not partial_rows:
    return True
  if len(partial_rows) == 1 and partial_rows[0] in (0, box.shape[0] - 1):
    return True
  return len(partial_cols) == 1 and partial_cols[0] in (0, box.shape[1] - 1)


@pytest.mark.parametrize("strategy", masking.STRATEGIES)
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("grid", GRIDS)
def test_exact_counts(strategy, ratio, grid):
  expected = masking.num_masked(strategy, grid, ratio)
  per_slot = masking.masked_per_slot(grid, ratio)
  for seed in range(20):
    mask = masking.make_mask(strategy, grid, ratio, seed, motion=_motion(grid, seed))
    assert mask.shape == grid and mask.dtype == bool
    assert mask.sum() == expected
    if strategy != "random":
      np.testing.assert_array_equal(mask.reshape(grid[0], -1).sum(axis=1), per_slot)


def test_num_masked_values():
  assert masking.num_masked("random", (8, 14, 14), 0.9) == round(0.9 * 1568)
  assert masking.num_masked("tube", (8, 14, 14), 0.9) == 8 * 176
  assert masking.num_masked("mgm", (8, 14, 14), 0.75) == 8 * 147


@pytest.mark.parametrize("strategy", ["tube", "block"])
def test_static_strategies_constant_over_time(strategy):
  for seed in range(10):
    mask = masking.make_mask(strategy, (8, 14, 14), 0.75, seed)
    assert (mask == mask[:1]).all()


@pytest.mark.parametrize("strategy", DENSE)
@pytest.mark.parametrize("grid", [(8, 14, 14), (8, 7, 7), (3, 5, 13), (8, 7, 3)])
def test_dense_strategies_are_one_box_per_slot(strategy, grid):
  for seed in range(20):
    mask = masking.make_mask(strategy, grid, 0.6, seed, motion=_motion(grid, seed))
    for slot in mask:
      assert _components(slot) == 1
      assert _is_box_with_one_partial_edge(slot)


@pytest.mark.parametrize("strategy", masking.STRATEGIES)
def test_deterministic_by_seed(strategy):
  grid = (8, 14, 14)
  motion = _motion(grid, 0)
  a = masking.make_mask(strategy, grid, 0.75, 123, motion=motion)
  b = masking.make_mask(strategy, grid, 0.75, np.random.default_rng(123), motion=motion)
  np.testing.assert_array_equal(a, b)
  others = [masking.make_mask(strategy, grid, 0.75, s, motion=_motion(grid, s)) for s in range(5)]
  assert any((o != a).any() for o in others)


def _moving_peak(t=8, size=28, start=(3, 3), velocity=(3, 2)):
  """A motion map with one bright cell moving across the frame; returns the map and its path."""
  motion = np.zeros((t, size, size), np.float32)
  path = []
  for i in range(t):
    y, x = start[0] + velocity[1] * i, start[1] + velocity[0] * i
    motion[i, y, x] = 5.0
    motion[i] += 0.1  # a weak background everywhere
    path.append((y, x))
  return motion, path


@pytest.mark.parametrize("strategy", ["mgm", "mgm_sparse"])
def test_mgm_follows_the_motion_peak(strategy):
  motion, path = _moving_peak()
  hits = 0
  for seed in range(10):
    mask = masking.make_mask(strategy, (8, 14, 14), 0.75, seed, motion=motion)
    for i, (y, x) in enumerate(path):
      hits += mask[i, y // 2, x // 2]  # the 28x28 map on a 14x14 token grid
  assert hits / 80 >= (1.0 if strategy == "mgm" else 0.9)


def test_mgm_mask_moves_with_the_peak():
  motion, path = _moving_peak(velocity=(3, 3))
  mask = masking.make_mask("mgm", (8, 14, 14), 0.25, 0, motion=motion, jitter=0)
  centres = [np.argwhere(s).mean(axis=0) for s in mask]
  # The box centre moves down-right like the peak (it may stop at the border).
  assert centres[-1][0] > centres[0][0] + 3 and centres[-1][1] > centres[0][1] + 3


def test_mgm_covers_motion_at_corners():
  motion = np.zeros((4, 14, 14))
  corners = [(0, 0), (0, 13), (13, 0), (13, 13)]
  for i, (y, x) in enumerate(corners):
    motion[i, y, x] = 1.0
  mask = masking.make_mask("mgm", (4, 14, 14), 0.3, 0, motion=motion)
  for i, (y, x) in enumerate(corners):
    assert mask[i, y, x]


def test_mgm_without_motion_holds_a_random_start():
  grid = (8, 14, 14)
  still = masking.make_mask("mgm", grid, 0.5, 0, motion=np.zeros((8, 28, 28)), jitter=0)
  assert (still == still[:1]).all()  # no motion anywhere: a static box, like `block`
  starts = {masking.make_mask("mgm", grid, 0.5, s, motion=np.zeros((8, 4, 4)), jitter=0)
            .tobytes() for s in range(10)}
  assert len(starts) > 1  # ... at a random place


def test_mgm_gaps_hold_the_last_moving_centre():
  motion = np.zeros((6, 14, 14))
  motion[2, 10, 10] = 1.0  # slots 0-1: no motion yet; 3-5: motion stops
  mask = masking.make_mask("mgm", (6, 14, 14), 0.1, 0, motion=motion, jitter=0)
  for i in range(2, 6):
    np.testing.assert_array_equal(mask[i], mask[2])
    assert mask[i, 10, 10]
  np.testing.assert_array_equal(mask[0], mask[1])


def test_mgm_breaks_ties_at_random():
  motion = np.zeros((1, 14, 14))
  motion[0, 1, 1] = motion[0, 12, 12] = 1.0
  covered = {(bool(m[0, 1, 1]), bool(m[0, 12, 12])) for m in (
      masking.make_mask("mgm", (1, 14, 14), 0.1, s, motion=motion) for s in range(30))}
  assert covered == {(True, False), (False, True)}


def test_mgm_accepts_any_motion_resolution_and_ignores_nan():
  grid = (2, 14, 14)
  coarse = np.zeros((2, 2, 2))
  coarse[:, 1, 1] = 1.0  # bottom-right quadrant
  coarse[0, 0, 0] = np.nan
  mask = masking.make_mask("mgm", grid, 0.2, 0, motion=coarse)
  assert mask[:, 10, 10].all() and not mask[:, 2, 2].any()


def test_jitter_changes_aspect_and_returns():
  grid = (8, 14, 14)
  motion = np.ones((8, 14, 14))
  shapes = set()
  for seed in range(10):
    mask = masking.make_mask("mgm", grid, 0.3, seed, motion=motion, jitter=2.0)
    ys, xs = np.nonzero(mask[3])
    shapes.add((np.ptp(ys), np.ptp(xs)))
  assert len(shapes) > 1
  flat = masking.make_mask("mgm", grid, 0.3, 0, motion=np.zeros((8, 14, 14)), jitter=0)
  ys, xs = np.nonzero(flat[0])
  assert abs(np.ptp(ys) - np.ptp(xs)) <= 1  # no jitter: square as far as the count allows


def test_smm_moves_and_stays_inside():
  moved = 0
  for seed in range(20):
    mask = masking.make_mask("smm", (8, 14, 14), 0.3, seed, speed=1.5)
    moved += not (mask == mask[:1]).all()
  assert moved >= 15


def test_sparse_is_scattered_but_centred():
  grid = (8, 14, 14)
  motion, path = _moving_peak(start=(8, 6), velocity=(2, 1))  # away from the borders
  errors, hits, pieces = [], 0, []
  for seed in range(20):
    mask = masking.make_mask("mgm_sparse", grid, 0.3, seed, motion=motion)
    for i, (y, x) in enumerate(path):
      centroid = np.argwhere(mask[i]).mean(axis=0) + 0.5  # token centres
      peak = np.array([(y + 0.5) / 2, (x + 0.5) / 2])  # the 28x28 cell in token coordinates
      errors.append(np.hypot(*(centroid - peak)))
      hits += mask[i, y // 2, x // 2]
      pieces.append(_components(mask[i]))
  assert np.mean(errors) < 1.0  # centred on the motion ...
  assert hits / 160 > 0.85  # ... covering the peak ...
  assert np.mean(pieces) > 3  # ... yet spatially discontinuous, unlike the dense variant


@pytest.mark.parametrize("kwargs, field", [
    (dict(strategy="nope"), "strategy"),
    (dict(mask_ratio=0.0), "mask_ratio"),
    (dict(mask_ratio=1.0), "mask_ratio"),
    (dict(grid=(8, 14)), "grid"),
    (dict(grid=(8, 0, 14)), "grid"),
    (dict(strategy="mgm", motion=None), "motion"),
    (dict(strategy="mgm", motion=np.zeros((7, 4, 4))), "motion"),
    (dict(grid=(1, 1, 2), mask_ratio=0.1), "mask_ratio"),
])
def test_invalid_arguments_name_the_field(kwargs, field):
  args = dict(strategy="tube", grid=(8, 14, 14), mask_ratio=0.75, rng=0, motion=np.ones((8, 4, 4)))
  args.update(kwargs)
  with pytest.raises(ValueError, match=field):
    masking.make_mask(**args)


def test_masking_imports_without_jax():
  code = "import sys, mgm_jax.masking; assert 'jax' not in sys.modules, 'jax was imported'"
  subprocess.run([sys.executable, "-c", code], check=True)
