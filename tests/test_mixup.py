"""Tests for mgm_jax.mixup against expectations written from timm's Mixup(mode='batch')."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgm_jax import mixup

B, T, H, W, C = 4, 3, 16, 20, 3
K = 5  # classes


def _batch(seed=0, b=B):
  rng = np.random.default_rng(seed)
  frames = rng.normal(size=(b, T, H, W, C)).astype(np.float32)  # every pixel differs per clip
  labels = rng.integers(0, K, size=(b,)).astype(np.int32)
  return jnp.asarray(frames), jnp.asarray(labels)


def _np_smooth(labels, smoothing):
  off = smoothing / K
  y = np.full((len(labels), K), off, np.float64)
  y[np.arange(len(labels)), np.asarray(labels)] = 1 - smoothing + off
  return y


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def test_targets_sum_to_one_and_are_float32():
  frames, labels = _batch()
  for key in _keys(12):
    _, targets, info = mixup.mix(frames, labels, key, num_classes=K)
    assert targets.shape == (B, K) and targets.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, atol=1e-6)
    assert info['lam'].shape == () and info['cutmix'].dtype == jnp.bool_


@pytest.mark.parametrize('kwargs', [dict(mixup_alpha=0.0, cutmix_alpha=0.0), dict(prob=0.0)])
def test_no_mixing_is_identity_with_one_hot_targets(kwargs):
  frames, labels = _batch()
  out, targets, info = mixup.mix(frames, labels, jax.random.key(3), num_classes=K,
                                 label_smoothing=0.0, **kwargs)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(frames))
  np.testing.assert_array_equal(np.asarray(targets), np.eye(K)[np.asarray(labels)])
  assert float(info['lam']) == 1.0 and not bool(info['cutmix'])
  # With smoothing: timm's mixup_target at lam = 1.
  _, targets, _ = mixup.mix(frames, labels, jax.random.key(3), num_classes=K,
                            label_smoothing=0.1, **kwargs)
  np.testing.assert_allclose(np.asarray(targets), _np_smooth(labels, 0.1), atol=1e-7)
  assert np.isclose(np.asarray(targets).max(), 1 - 0.1 + 0.1 / K)


@pytest.mark.parametrize('kwargs', [dict(cutmix_alpha=0.0), dict(switch_prob=0.0)])
def test_mixup_blends_with_flipped_batch(kwargs):
  frames, labels = _batch(1)
  x = np.asarray(frames, np.float64)
  y = _np_smooth(labels, 0.1)
  for key in _keys(6, seed=1):
    out, targets, info = mixup.mix(frames, labels, key, num_classes=K, **kwargs)
    lam = float(info['lam'])
    assert not bool(info['cutmix']) and 0.0 < lam < 1.0
    np.testing.assert_allclose(np.asarray(out), lam * x + (1 - lam) * x[::-1], atol=1e-5)
    np.testing.assert_allclose(np.asarray(targets), lam * y + (1 - lam) * y[::-1], atol=1e-6)


@pytest.mark.parametrize('kwargs', [dict(mixup_alpha=0.0), dict(switch_prob=1.0)])
def test_cutmix_pastes_one_tube_and_lam_is_the_kept_fraction(kwargs):
  frames, labels = _batch(2)
  x = np.asarray(frames)
  y = _np_smooth(labels, 0.1)
  nonempty = 0
  for key in _keys(16, seed=2):
    out, targets, info = mixup.mix(frames, labels, key, num_classes=K, **kwargs)
    out = np.asarray(out)
    lam = float(info['lam'])
    assert bool(info['cutmix'])
    pasted = np.all(out == x[::-1], axis=-1)  # [B, T, H, W]
    kept = np.all(out == x, axis=-1)
    assert np.all(pasted ^ kept)  # every pixel is exactly one of the two clips
    region = pasted[0, 0]
    # The same box in every frame of every clip.
    assert np.all(pasted == region[None, None])
    rows, cols = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
    if rows.size:
      nonempty += 1
      box = np.zeros_like(region)
      box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
      np.testing.assert_array_equal(region, box)  # one axis-aligned rectangle
    # The fraction taken from the flipped batch is 1 - lam, the label weight of the partner.
    assert np.isclose(region.mean(), 1 - lam, atol=1e-6)
    np.testing.assert_allclose(np.asarray(targets), lam * y + (1 - lam) * y[::-1], atol=1e-6)
  assert nonempty >= 8


def test_cutmix_box_geometry_follows_rand_bbox():
  # lam 0.75 -> side ratio 0.5 -> cuts 16 of 32 and 20 of 40: box [c - half, c + half) clipped.
  centres = []
  for key in _keys(64, seed=4):
    yl, yh, xl, xh = (int(v) for v in mixup._box(key, jnp.float32(0.75), 32, 40))
    cy = yl + 8 if yl > 0 else yh - 8  # the centre, recovered from the unclipped side
    cx = xl + 10 if xl > 0 else xh - 10
    assert 0 <= cy < 32 and 0 <= cx < 40
    assert (yl, yh) == (max(cy - 8, 0), min(cy + 8, 32))
    assert (xl, xh) == (max(cx - 10, 0), min(cx + 10, 40))
    centres.append((cy, cx))
  cy, cx = np.array(centres).T
  assert cy.min() < 8 and cy.max() > 24 and cx.min() < 10 and cx.max() > 30  # uniform centre
  assert mixup._box(jax.random.key(0), jnp.float32(1.0), 32, 40)[0] == \
      mixup._box(jax.random.key(0), jnp.float32(1.0), 32, 40)[1]  # lam 1: empty box


def test_switch_prob_and_prob_select_the_mode():
  frames, labels = _batch(3)
  keys = _keys(40, seed=3)
  run = lambda **kw: [mixup.mix(frames, labels, k, num_classes=K, **kw)[2] for k in keys]
  assert not any(bool(i['cutmix']) for i in run(switch_prob=0.0))
  assert all(bool(i['cutmix']) for i in run(switch_prob=1.0))
  both = [bool(i['cutmix']) for i in run(switch_prob=0.5)]
  assert 5 < sum(both) < 35
  applied = [float(i['lam']) < 1.0 for i in run(prob=0.5)]
  assert 5 < sum(applied) < 35
  for info in run(prob=0.5):  # not applied -> lam 1 and no cutmix
    if float(info['lam']) == 1.0:
      assert not bool(info['cutmix'])


def test_lam_distribution_is_beta():
  frames, labels = _batch(4, b=2)
  frames = frames[:, :1, :4, :4]
  lam = np.array([float(mixup.mix(frames, labels, k, num_classes=K, cutmix_alpha=0.0)[2]['lam'])
                  for k in _keys(400, seed=5)])
  # Beta(0.8, 0.8): mean 0.5, variance 0.64 / (2.56 * 2.6) = 0.0962.
  assert abs(lam.mean() - 0.5) < 0.05
  assert abs(lam.var() - 0.0962) < 0.02


def test_deterministic_per_key_and_jit_matches_eager():
  frames, labels = _batch(5)
  key = jax.random.key(11)
  a = mixup.mix(frames, labels, key, num_classes=K)
  b = mixup.mix(frames, labels, key, num_classes=K)
  jitted = jax.jit(functools.partial(mixup.mix, num_classes=K, switch_prob=0.5))
  c = jitted(frames, labels, key)
  for u, v, w in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    np.testing.assert_allclose(np.asarray(u), np.asarray(w), atol=1e-6)
  lams = {float(jitted(frames, labels, k)[2]['lam']) for k in _keys(8, seed=6)}
  assert len(lams) == 8


def test_odd_batch_middle_clip_mixes_with_itself():
  frames, labels = _batch(6, b=5)
  out, targets, info = mixup.mix(frames, labels, jax.random.key(0), num_classes=K,
                                 cutmix_alpha=0.0)
  assert float(info['lam']) < 1.0
  np.testing.assert_allclose(np.asarray(out[2]), np.asarray(frames[2]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(targets[2]), _np_smooth(labels, 0.1)[2], atol=1e-6)


def test_bfloat16_frames_keep_their_dtype():
  frames, labels = _batch(7)
  out, targets, _ = mixup.mix(frames.astype(jnp.bfloat16), labels, jax.random.key(1),
                              num_classes=K)
  assert out.dtype == jnp.bfloat16 and targets.dtype == jnp.float32


def test_soft_cross_entropy():
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(6, K)).astype(np.float32) * 3
  labels = rng.integers(0, K, size=6)
  targets = rng.dirichlet(np.ones(K), size=6)
  z = logits.astype(np.float64)
  logp = z - z.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  expected = np.mean(-(targets * logp).sum(-1))
  got = mixup.soft_cross_entropy(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32),
                                 jnp.asarray(targets, jnp.float32))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(mixup.soft_cross_entropy(logits, targets)), expected,
                             rtol=1e-5)
  assert np.isfinite(float(got))
  # Smoothed one-hot targets give timm's LabelSmoothingCrossEntropy (what VideoMAE uses when
  # mixup is off): (1 - s) * nll + s * mean over classes of -log p.
  s = 0.1
  lsce = np.mean((1 - s) * -logp[np.arange(6), labels] + s * -logp.mean(-1))
  y = mixup.smooth_one_hot(jnp.asarray(labels), K, s)
  np.testing.assert_allclose(float(mixup.soft_cross_entropy(logits, y)), lsce, rtol=1e-5)
