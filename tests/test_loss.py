"""Tests for mgm_jax.loss against NumPy written from scratch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgm_jax import loss as L

TUBELET, PATCH = 2, 4
SHAPE = (2, 4, 8, 12, 3)  # B, T, H, W, C -> 2 x 2 x 3 = 12 tokens of 2 * 4 * 4 * 3 = 96 values
NUM_TOKENS, PATCH_DIM = 12, 96


def _np_patches(video):
  """[B, T, H, W, C] -> [B, N, tubelet * patch**2, C] by explicit loops over tokens (t, h, w)."""
  b, t, h, w, c = video.shape
  out = []
  for ti in range(t // TUBELET):
    for hi in range(h // PATCH):
      for wi in range(w // PATCH):
        block = video[:, ti * TUBELET:(ti + 1) * TUBELET, hi * PATCH:(hi + 1) * PATCH,
                      wi * PATCH:(wi + 1) * PATCH, :]
        out.append(block.reshape(b, -1, c))  # C order: (t, h, w) pixels, then c
  return np.stack(out, axis=1).astype(np.float64)


def _np_target(video, norm_pix):
  x = _np_patches(video)
  if norm_pix:
    n = x.shape[2]
    mean = x.sum(axis=2, keepdims=True) / n
    std = np.sqrt(((x - mean) ** 2).sum(axis=2, keepdims=True) / (n - 1))  # unbiased
    x = (x - mean) / (std + 1e-6)
  return x.reshape(x.shape[0], x.shape[1], -1)


def _np_masked_mse(pred, target, mask):
  mask = mask.reshape(mask.shape[0], -1)
  selected = target[mask].reshape(mask.shape[0], -1, target.shape[-1])  # NumPy x[mask] order
  return np.mean((pred.astype(np.float64) - selected) ** 2)


def _mask(rng, num_masked, batch=2):
  mask = np.zeros((batch, NUM_TOKENS), bool)
  for row in mask:
    row[rng.permutation(NUM_TOKENS)[:num_masked]] = True
  return mask


@pytest.fixture
def video01():
  return np.random.default_rng(0).uniform(size=SHAPE).astype(np.float32)


def test_patchify_order(video01):
  patches = L.patchify(video01, TUBELET, PATCH)
  assert patches.shape == (2, NUM_TOKENS, PATCH_DIM)
  np.testing.assert_array_equal(patches, _np_patches(video01).reshape(2, NUM_TOKENS, -1))


def test_patchify_videomae_shape():
  video = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
  assert jax.eval_shape(lambda v: L.patchify(v, 2, 16), video).shape == (1, 1568, 1536)


@pytest.mark.parametrize('norm_pix', [True, False])
def test_reconstruction_target(video01, norm_pix):
  target = L.reconstruction_target(video01, TUBELET, PATCH, norm_pix=norm_pix)
  assert target.dtype == jnp.float32
  np.testing.assert_allclose(target, _np_target(video01, norm_pix), rtol=1e-5, atol=1e-5)


def test_constant_patches_give_finite_zero_target():
  target = L.reconstruction_target(np.full(SHAPE, 0.5, np.float32), TUBELET, PATCH)
  np.testing.assert_array_equal(target, 0.0)


@pytest.mark.parametrize('norm_pix', [True, False])
@pytest.mark.parametrize('num_masked', [1, 9])
@pytest.mark.parametrize('grid_mask', [False, True])
def test_masked_mse_matches_numpy(video01, norm_pix, num_masked, grid_mask):
  rng = np.random.default_rng(num_masked)
  mask = _mask(rng, num_masked)
  pred = rng.standard_normal((2, num_masked, PATCH_DIM)).astype(np.float32)
  target = L.reconstruction_target(video01, TUBELET, PATCH, norm_pix=norm_pix)
  given_mask = mask.reshape(2, 2, 2, 3) if grid_mask else mask
  loss = L.masked_mse(pred, target, given_mask, num_masked)
  expected = _np_masked_mse(pred, _np_target(video01, norm_pix), mask)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_masked_mse_is_zero_for_the_right_tokens_in_order(video01):
  rng = np.random.default_rng(1)
  mask = _mask(rng, 5)
  target = _np_target(video01, True).astype(np.float32)
  pred = target[mask].reshape(2, 5, -1)
  assert float(L.masked_mse(pred, target, mask, 5)) < 1e-12
  assert float(L.masked_mse(pred[:, ::-1], target, mask, 5)) > 0.1  # order matters


def test_masked_mse_shape_error(video01):
  target = L.reconstruction_target(video01, TUBELET, PATCH)
  with pytest.raises(ValueError, match='pred shape'):
    L.masked_mse(jnp.zeros((2, 4, PATCH_DIM)), target, _mask(np.random.default_rng(2), 5), 5)


def test_masked_losses_weighted_sum(video01):
  rng = np.random.default_rng(3)
  mask, num_masked = _mask(rng, 6), 6
  pixels = L.PixelTarget(tubelet=TUBELET, patch=PATCH)
  raw = L.PixelTarget(name='raw', weight=0.5, tubelet=TUBELET, patch=PATCH, norm_pix=False)
  preds = {name: rng.standard_normal((2, num_masked, PATCH_DIM)).astype(np.float32)
           for name in ('pixels', 'raw')}
  batch = {'video01': video01}
  total, terms = L.masked_losses(preds, batch, mask, num_masked, [pixels, raw])
  expected = {'pixels': _np_masked_mse(preds['pixels'], _np_target(video01, True), mask),
              'raw': _np_masked_mse(preds['raw'], _np_target(video01, False), mask)}
  assert set(terms) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-5)
  np.testing.assert_allclose(total, expected['pixels'] + 0.5 * expected['raw'], rtol=1e-5)
  with pytest.raises(KeyError, match='motion'):
    L.masked_losses(preds, batch, mask, num_masked, [L.PixelTarget(name='motion')])
  with pytest.raises(ValueError, match='unique'):
    L.masked_losses(preds, batch, mask, num_masked, [pixels, pixels])


def test_jit_and_grad_with_static_num_masked(video01):
  rng = np.random.default_rng(4)
  mask, num_masked = _mask(rng, 7), 7
  pred = rng.standard_normal((2, num_masked, PATCH_DIM)).astype(np.float32)

  @functools.partial(jax.jit, static_argnames='num_masked')
  def loss_and_grad(pred, video01, mask, num_masked):
    def f(p):
      return L.masked_mse(p, L.reconstruction_target(video01, TUBELET, PATCH), mask, num_masked)
    return jax.value_and_grad(f)(pred)

  loss, grad = loss_and_grad(pred, video01, mask, num_masked=num_masked)
  np.testing.assert_allclose(loss, _np_masked_mse(pred, _np_target(video01, True), mask),
                             rtol=1e-5)
  selected = _np_target(video01, True)[mask].reshape(2, num_masked, -1)
  np.testing.assert_allclose(grad, 2 * (pred - selected) / pred.size, rtol=1e-4, atol=1e-7)
