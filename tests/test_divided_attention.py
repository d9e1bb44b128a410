"""Tests for divided space-time attention (`model.attention='divided'`, MGM Table 4a).

A micro model on a (3, 2, 3) token grid (6 frames of 32x48, tubelet 2, patch 16): masks of
every kind leave visible sets with per-slot counts and positions that differ.
"""

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgm_jax import export
from mgm_jax import masking
from mgm_jax import model as M
from mgm_jax import pretrained

JOINT = M.model_config('tiny', img_size=(32, 48), num_frames=6, encoder_dim=32,
                       encoder_depth=2, encoder_heads=2, decoder_dim=16, decoder_depth=1,
                       decoder_heads=2)
DIVIDED = dataclasses.replace(JOINT, attention='divided')
GRID = DIVIDED.grid  # (3, 2, 3)
RATIO = 0.5
STRATEGIES = ('tube', 'mgm', 'random')
NUM_MASKED = masking.num_masked('random', GRID, RATIO)  # 9; the same for the three


def _noisy(model, seed):
  """Fills every parameter with NumPy noise (temporal_fc is no longer zero)."""
  rng = np.random.default_rng(seed)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    base = 1.0 if path[-1] == 'scale' else 0.0
    var.set_value(jnp.asarray(base + 0.2 * rng.standard_normal(var.shape), jnp.float32))
  return model


def _model(cfg, seed=0):
  """The model of `cfg` holding NumPy noise (no eager init compiles; usable with drop path)."""
  abstract = nnx.eval_shape(lambda: M.make_model(cfg, nnx.Rngs(0)))
  params = nnx.to_pure_dict(nnx.state(_noisy(abstract, seed), nnx.Param))
  return M.from_params(cfg, params)


def _video(batch=2, seed=0):
  shape = (batch, JOINT.num_frames, *JOINT.img_size, 3)
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _masks(strategy, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return np.stack([masking.make_mask(strategy, GRID, RATIO, rng, motion=rng.random((3, 4, 6)))
                   for _ in range(batch)])


@nnx.jit
def _autoencoder_outputs(model, video, mask):
  return model.encode(video, mask, NUM_MASKED), model.predict(video, mask, num_masked=NUM_MASKED)


@nnx.jit
def _logits(model, video):
  return model(video)


def test_config_validates_attention():
  with pytest.raises(ValueError, match='model.attention'):
    dataclasses.replace(JOINT, attention='axial')
  with pytest.raises(ValueError, match='cudnn'):
    dataclasses.replace(DIVIDED, attention_impl='cudnn')
  # The classifier sees every token: the reshape form needs no mask, cudnn is allowed.
  assert dataclasses.replace(DIVIDED, attention_impl='cudnn', num_classes=3).attention == 'divided'


def test_masks_follow_position_and_slot():
  visible = jnp.asarray([[0, 2, 6, 8, 13]])  # (slot, pos): (0,0) (0,2) (1,0) (1,2) (2,1)
  temporal, spatial = M.divided_attention_masks(visible, GRID)
  want_t = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0],
                     [0, 0, 0, 0, 1]], bool)
  want_s = np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0],
                     [0, 0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(np.asarray(temporal[0]), want_t)
  np.testing.assert_array_equal(np.asarray(spatial[0]), want_s)


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_shapes_equal_joint_attention(strategy):
  video, mask = _video(), _masks(strategy)
  joint, divided = _model(JOINT), _model(DIVIDED)
  got = jax.tree.map(lambda a: (a.shape, a.dtype), _autoencoder_outputs(divided, video, mask))
  want = jax.tree.map(lambda a: (a.shape, a.dtype), _autoencoder_outputs(joint, video, mask))
  assert got == want
  features, preds = _autoencoder_outputs(divided, video, mask)
  assert features.shape == (2, 18 - NUM_MASKED, 32)
  assert all(np.isfinite(np.asarray(p)).all() for p in preds.values())


def test_classifier_logits_shape_and_backbone_loading():
  cfg = dataclasses.replace(DIVIDED, num_classes=5)
  classifier = _model(cfg)
  logits = _logits(classifier, _video())
  assert logits.shape == (2, 5) and np.isfinite(np.asarray(logits)).all()
  # A divided pretraining run's encoder is the divided classifier's backbone.
  source = nnx.to_pure_dict(nnx.state(_model(DIVIDED, seed=3), nnx.Param))
  fresh = nnx.to_pure_dict(nnx.state(classifier, nnx.Param))
  params, _ = pretrained.fit(fresh, source, cfg)
  np.testing.assert_array_equal(params['encoder']['blocks'][1]['temporal_fc']['kernel'],
                                source['encoder']['blocks'][1]['temporal_fc']['kernel'])
  with pytest.raises(ValueError, match='temporal_attn'):  # a joint source lacks them
    pretrained.fit(fresh, nnx.to_pure_dict(nnx.state(_model(JOINT), nnx.Param)), cfg)


# ---- A NumPy reference of one divided block: explicit per-group softmax loops. ----

def _np_layer_norm(x, p, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _np_attention(x, p, heads, groups):
  """x [N, D] (normed) -> [N, D]; token i attends to the tokens j with groups[j] == groups[i]."""
  n, d = x.shape
  hd = d // heads
  qkv = x @ p['qkv']['kernel'] + np.concatenate([p['q_bias'], np.zeros(d), p['v_bias']])
  q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(n, heads, hd) for i in range(3))
  out = np.zeros((n, heads, hd))
  for i in range(n):
    keys = [j for j in range(n) if groups[j] == groups[i]]
    for h in range(heads):
      logits = np.array([q[i, h] @ k[j, h] for j in keys]) / math.sqrt(hd)
      weights = np.exp(logits - logits.max())
      weights /= weights.sum()
      out[i, h] = sum(wt * v[j, h] for wt, j in zip(weights, keys))
  return out.reshape(n, d) @ p['proj']['kernel'] + p['proj']['bias']


def _np_gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _np_divided_block(x, tokens, p, heads, eps):
  """One clip: x [N, D] at token indices `tokens` [N] of GRID."""
  hw = GRID[1] * GRID[2]
  position, slot = tokens % hw, tokens // hw
  x = x + (_np_attention(_np_layer_norm(x, p['temporal_norm'], eps), p['temporal_attn'], heads,
                         position) @ p['temporal_fc']['kernel'] + p['temporal_fc']['bias'])
  x = x + _np_attention(_np_layer_norm(x, p['norm1'], eps), p['attn'], heads, slot)
  hidden = _np_gelu(_np_layer_norm(x, p['norm2'], eps) @ p['mlp']['fc1']['kernel']
                    + p['mlp']['fc1']['bias'])
  return x + hidden @ p['mlp']['fc2']['kernel'] + p['mlp']['fc2']['bias']


@nnx.jit
def _run_block(blk, x, masks):
  return blk(x, masks)


@pytest.fixture(scope='module')
def block():
  blk = nnx.eval_shape(lambda: M.DividedBlock(DIVIDED, 32, 2, 0.0, rngs=nnx.Rngs(0)))
  return _noisy(blk, seed=7)


def test_block_matches_numpy_reference_all_tokens_and_masked_forms(block):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64),
                   nnx.to_pure_dict(nnx.state(block, nnx.Param)))
  eps = DIVIDED.layer_norm_eps
  x = np.random.default_rng(1).standard_normal((2, 18, 32)).astype(np.float32)
  tokens = np.arange(18)
  want = np.stack([_np_divided_block(x[b].astype(np.float64), tokens, p, 2, eps)
                   for b in range(2)])
  reshape_form = np.asarray(_run_block(block, jnp.asarray(x), None))
  np.testing.assert_allclose(reshape_form, want, atol=1e-5, rtol=1e-5)
  # The masked form with every token visible is the same computation.
  masks = M.divided_attention_masks(jnp.asarray(np.stack([tokens, tokens])), GRID)
  np.testing.assert_allclose(np.asarray(_run_block(block, jnp.asarray(x), masks)),
                             reshape_form, atol=1e-5, rtol=1e-5)

  # A random visible subset per clip, with unequal per-slot counts and a token alone at its
  # position (clip 0: slot counts 4, 1, 3; token 9 (slot 1, pos 3) has no temporal partner).
  visible = np.array([[0, 1, 3, 5, 9, 12, 14, 16], [2, 4, 6, 7, 8, 11, 13, 17]])
  counts = np.stack([np.bincount(v // 6, minlength=3) for v in visible])
  assert len(set(counts[0])) > 1 and len(set(counts[1])) > 1
  xv = np.take_along_axis(x, visible[:, :, None], axis=1)
  got = np.asarray(_run_block(block, jnp.asarray(xv),
                              M.divided_attention_masks(jnp.asarray(visible), GRID)))
  want = np.stack([_np_divided_block(xv[b].astype(np.float64), visible[b], p, 2, eps)
                   for b in range(2)])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_gradient_step_with_remat_and_drop_path_compiles_once():
  # TimeSformer's init: temporal_fc starts at zero (weight and bias).
  fresh = nnx.jit(lambda: M.DividedBlock(DIVIDED, 32, 2, 0.0, rngs=nnx.Rngs(0)))()
  assert not np.any(np.asarray(fresh.temporal_fc.kernel[...]))
  assert not np.any(np.asarray(fresh.temporal_fc.bias[...]))
  assert np.any(np.asarray(fresh.temporal_attn.qkv.kernel[...]))
  cfg = dataclasses.replace(DIVIDED, remat=True, drop_path_rate=0.2)
  model = _model(cfg)
  traces = []

  @nnx.jit
  def grads(model, video, mask):
    traces.append(1)
    def loss(m):
      pred = m(video, mask, num_masked=NUM_MASKED, deterministic=False)
      return jnp.mean(pred ** 2)
    return nnx.grad(loss)(model)

  for strategy in ('mgm', 'random'):
    g = nnx.to_pure_dict(grads(model, _video(), _masks(strategy)))
    leaves = jax.tree.leaves(g)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)
    assert np.any(np.asarray(g['encoder']['blocks'][1]['temporal_fc']['kernel']))
  assert len(traces) == 1


def test_export_refuses_divided_models():
  params = nnx.to_pure_dict(nnx.state(_model(DIVIDED), nnx.Param))
  for call in (lambda: export.to_videomae_state_dict(params),
               lambda: export.to_hf_state_dicts(params),
               lambda: export.hf_config(DIVIDED),
               lambda: export.official_shapes(DIVIDED),
               lambda: export.from_videomae_state_dict({}, DIVIDED)):
    with pytest.raises(ValueError, match="model.attention='divided' is JAX-only"):
      call()
  assert export.to_videomae_state_dict(nnx.to_pure_dict(nnx.state(_model(JOINT), nnx.Param)))
