"""Tests for mgm_jax.hog: cell histograms against scikit-image, token layout by explicit loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgm_jax import hog

skimage_feature = pytest.importorskip('skimage.feature')

CELL, BINS = 8, 9
TUBELET, PATCH = 2, 16
K = PATCH // CELL  # cells per patch side

# Jitted once per shape: op-by-op dispatch compiles every primitive and would dominate the runtime.
cell_histograms = jax.jit(hog.cell_histograms, static_argnums=(1, 2))
hog_target = jax.jit(hog.hog_target, static_argnums=(1, 2))


def _edge(shape, degrees):
  """Anti-aliased step edge whose normal points at `degrees` (rows down, columns right)."""
  rows, cols = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
  theta = np.deg2rad(degrees)
  distance = (cols - shape[1] / 2) * np.cos(theta) + (rows - shape[0] / 2) * np.sin(theta)
  return np.clip(0.5 + distance / 3, 0, 1)


def _images():
  rng = np.random.default_rng(0)
  shape = (32, 48)
  rows, cols = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
  disc = np.clip(12 - np.hypot(rows - 15.3, cols - 22.7), 0, 1)
  images = {
      'uniform_noise': rng.uniform(size=shape),
      'uint8_noise': rng.integers(0, 256, size=shape) / 255,
      'ramp_cols': cols / 47,
      'ramp_rows': rows / 31,
      'ramp_diagonal': (cols + 2 * rows) / 110,
      'checkerboard': ((rows // 4 + cols // 4) % 2).astype(np.float64),
      'disc': disc,
      'flat': np.full(shape, 0.4),
  }
  # Edge normals away from the bin boundaries (multiples of 20 deg), apart from the exact 0/90.
  for degrees in (0, 10, 35, 90, 125, 150, 250):
    images[f'edge_{degrees}'] = _edge(shape, degrees)
  return {name: image.astype(np.float32) for name, image in images.items()}


IMAGES = _images()


def _skimage_cells(image, cell=CELL, bins=BINS):
  """skimage's cell histograms, L1-normalised per cell (blocks of one cell)."""
  return skimage_feature.hog(image, orientations=bins, pixels_per_cell=(cell, cell),
                             cells_per_block=(1, 1), block_norm='L1',
                             feature_vector=False)[:, :, 0, 0, :]


def _l1(hist):
  """skimage's L1 block norm, v / (sum |v| + 1e-5), per cell."""
  hist = np.asarray(hist, np.float64)
  return hist / (np.abs(hist).sum(axis=-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize('name', sorted(IMAGES))
def test_cell_histograms_match_skimage(name):
  ours = cell_histograms(IMAGES[name], CELL, BINS)
  assert ours.shape == (4, 6, BINS)
  np.testing.assert_allclose(_l1(ours), _skimage_cells(IMAGES[name]), rtol=0, atol=1e-5)


@pytest.mark.parametrize('bins, cell', [(4, 4), (6, 8), (12, 16), (14, 8), (1, 8)])
def test_cell_histograms_match_skimage_at_exact_edges(bins, cell):
  """Bin edges at 45/90/135 deg, met exactly or within 1 ulp by quantised pixels.

  E.g. levels k / 3 give gradients (1/3, -(1 - 2/3)) = (0.33333334, -0.33333331): 134.9999974 deg,
  which float32 atan2 rounds onto the 135 deg edge.
  """
  rng = np.random.default_rng(bins)
  for image in (rng.integers(0, 4, size=(32, 48)) / 3, rng.integers(0, 256, size=(32, 48)) / 255):
    image = image.astype(np.float32)
    ours = cell_histograms(image, cell, bins)
    np.testing.assert_allclose(_l1(ours), _skimage_cells(image, cell, bins), rtol=0, atol=1e-5)


def test_cell_histograms_ramp_by_hand():
  """A ramp of slope a has magnitude 2a at one orientation, except on its zero border."""
  a = 1 / 64
  cols = np.mgrid[:16, :24][1].astype(np.float32)
  # Along columns: g_col = 2a except columns 0 and 23 (g_col = 0); g_row = 0 -> 0 deg, bin 0.
  # Interior cell: 64 pixels * 2a / 64 = 2a. Border cells: 7 of 8 columns vote -> 7/8 * 2a.
  got = np.asarray(cell_histograms(a * cols))
  expected = np.zeros((2, 3, BINS), np.float32)
  expected[:, :, 0] = [7 / 8 * 2 * a, 2 * a, 7 / 8 * 2 * a]
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
  # Along rows: 90 deg -> bin 4 ([80, 100)); border cell rows lose their first/last row.
  got = np.asarray(cell_histograms(a * cols.T))  # 24 x 16, ramp along rows: 3 x 2 cells
  expected = np.zeros((3, 2, BINS), np.float32)
  expected[:, :, 4] = np.array([7 / 8 * 2 * a, 2 * a, 7 / 8 * 2 * a])[:, None]
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)


def test_cell_histograms_batches_leading_axes():
  images = np.stack([IMAGES['uniform_noise'], IMAGES['disc'], IMAGES['edge_35']])
  got = np.asarray(cell_histograms(images.reshape(3, 1, 32, 48)))
  assert got.shape == (3, 1, 4, 6, BINS) and got.dtype == np.float32
  for i, image in enumerate(images):
    np.testing.assert_array_equal(got[i, 0], np.asarray(cell_histograms(image)))


def test_cell_histograms_rejects_bad_shapes():
  with pytest.raises(ValueError, match='cell'):
    hog.cell_histograms(np.zeros((12, 16), np.float32), cell=8)
  with pytest.raises(ValueError, match='images'):
    hog.cell_histograms(np.zeros((16,), np.float32))


def _reference_target(video, eps=1e-6):
  """hog_target by explicit loops over tokens, frames, cells, bins and channels."""
  b, t, h, w, c = video.shape
  hist = np.zeros((b, t, c, h // CELL, w // CELL, BINS))
  for bi in range(b):
    for ti in range(t):
      for ci in range(c):
        hist[bi, ti, ci] = np.asarray(cell_histograms(video[bi, ti, :, :, ci]))
  tokens = []
  for ti in range(t // TUBELET):
    for hi in range(h // PATCH):
      for wi in range(w // PATCH):
        values = np.zeros((b, TUBELET, K, K, BINS, c))
        for p0 in range(TUBELET):
          for ci in range(c):
            block = hist[:, ti * TUBELET + p0, ci, hi * K:(hi + 1) * K, wi * K:(wi + 1) * K]
            norm = np.sqrt((block ** 2).sum(axis=(1, 2, 3), keepdims=True))
            values[:, p0, :, :, :, ci] = block / (norm + eps)
        tokens.append(values.reshape(b, -1))
  return np.stack(tokens, axis=1)


def _video(shape=(2, 4, 32, 48, 3), seed=0):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def test_hog_target_shape_and_order_match_loops():
  video = _video()
  got = hog_target(video, TUBELET, PATCH)
  # N = 2 * 2 * 3 tokens; D = tubelet * K**2 * bins * C = 2 * 4 * 9 * 3.
  assert got.shape == (2, 12, 216) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), _reference_target(video), rtol=0, atol=1e-6)


def test_hog_target_is_local_to_its_token():
  """Texture kept 1 pixel inside one token, one frame and one channel leaves the rest 0.

  A pixel's gradient reads only its two neighbours, so texture on rows/columns 1..14 of a
  16-pixel token makes gradients only on rows/columns 0..15 of that token: no bleeding.
  """
  video = np.full((1, 4, 32, 48, 3), 0.3, np.float32)
  ti, hi, wi, p0, ci = 1, 0, 2, 1, 2
  r0, c0 = hi * PATCH, wi * PATCH
  texture = np.random.default_rng(1).uniform(size=(PATCH - 2, PATCH - 2))
  video[0, ti * TUBELET + p0, r0 + 1:r0 + PATCH - 1, c0 + 1:c0 + PATCH - 1, ci] = texture
  got = np.asarray(hog_target(video, TUBELET, PATCH))
  token = ti * (2 * 3) + hi * 3 + wi
  others = np.delete(got, token, axis=1)
  np.testing.assert_array_equal(others, 0)
  values = got[0, token].reshape(TUBELET, K, K, BINS, 3)
  mask = np.zeros(values.shape, bool)
  mask[p0, :, :, :, ci] = True
  np.testing.assert_array_equal(values[~mask], 0)
  assert np.all(np.abs(values[mask]).reshape(K, K, BINS).sum(axis=-1) > 0)  # every cell
  np.testing.assert_allclose(np.linalg.norm(values[mask]), 1, atol=1e-5)


def test_hog_target_patch_norms():
  """Per (token, frame, channel): L2 norm 1 where textured, exactly 0 where flat."""
  rng = np.random.default_rng(2)
  video = np.full((2, 4, 32, 48, 3), 0.7, np.float32)
  textured = rng.random((2, 2, 2, 3, TUBELET, 3)) < 0.5  # [B, t, h, w, frame, C]
  for bi, ti, hi, wi, p0, ci in zip(*np.nonzero(textured)):
    rows = slice(hi * PATCH + 1, (hi + 1) * PATCH - 1)
    cols = slice(wi * PATCH + 1, (wi + 1) * PATCH - 1)
    video[bi, ti * TUBELET + p0, rows, cols, ci] = rng.uniform(size=(PATCH - 2, PATCH - 2))
  got = np.asarray(hog_target(video, TUBELET, PATCH))
  values = got.reshape(2, 12, TUBELET, K * K * BINS, 3)
  norms = np.linalg.norm(values, axis=3).reshape(textured.shape)
  np.testing.assert_allclose(norms[textured], 1, atol=1e-5)
  np.testing.assert_array_equal(norms[~textured], 0)


def test_hog_target_jit_matches_eager():
  video = _video(shape=(1, 2, 16, 32, 3), seed=3)  # small: eager dispatch compiles every op
  eager = hog.hog_target(video, TUBELET, PATCH)
  jitted = hog_target(video, TUBELET, PATCH)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=0, atol=1e-6)


def test_hog_target_has_no_gradient():
  video = jnp.asarray(_video(seed=4))
  grad = jax.jit(jax.grad(lambda v: jnp.sum(hog.hog_target(v, TUBELET, PATCH))))(video)
  np.testing.assert_array_equal(np.asarray(grad), 0)


@pytest.mark.parametrize('shape, tubelet, patch, cell, field', [
    ((1, 4, 32, 48, 3), 2, 12, 8, 'patch=12'),
    ((1, 4, 24, 48, 3), 2, 16, 8, 'H=24'),
    ((1, 4, 32, 40, 3), 2, 16, 8, 'W=40'),
    ((1, 3, 32, 48, 3), 2, 16, 8, 'T=3'),
    ((4, 32, 48, 3), 2, 16, 8, 'video01'),
    ((1, 4, 32, 48, 3), 0, 16, 8, 'tubelet'),
    ((1, 4, 32, 48, 3), 2, 16, 0, 'cell'),
])
def test_hog_target_rejects_bad_arguments(shape, tubelet, patch, cell, field):
  with pytest.raises(ValueError, match=field):
    hog.hog_target(np.zeros(shape, np.float32), tubelet, patch, cell=cell)
