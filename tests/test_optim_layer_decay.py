"""Tests for layer-wise lr decay, lr-scaled AdamW and the parameter EMA in mgm_jax.optim.

The params are built by hand (the classifier's layout: encoder/patch_embed, encoder/blocks/<i>,
fc_norm, head), so the tests do not depend on the model code.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mgm_jax import optim

L = 3  # blocks
D = 4


def _block(rng):
  n = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {'norm1': {'scale': n(D), 'bias': n(D)},
          'attn': {'qkv': {'kernel': n(D, 3 * D)}, 'q_bias': n(D), 'v_bias': n(D),
                   'proj': {'kernel': n(D, D), 'bias': n(D)}},
          'norm2': {'scale': n(D), 'bias': n(D)},
          'mlp': {'fc1': {'kernel': n(D, 2 * D), 'bias': n(2 * D)},
                  'fc2': {'kernel': n(2 * D, D), 'bias': n(D)}}}


def _params(seed=0):
  rng = np.random.default_rng(seed)
  n = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {'encoder': {'patch_embed': {'proj': {'kernel': n(2, 2, 2, 3, D), 'bias': n(D)}},
                      'blocks': {i: _block(rng) for i in range(L)}},
          'fc_norm': {'scale': n(D), 'bias': n(D)},
          'head': {'kernel': n(D, 7), 'bias': n(7)}}


def _expected_layer(path):
  """Written independently: which VideoMAE layer each of our top-level groups belongs to."""
  keys = [getattr(k, 'key', k) for k in path]
  if keys[:2] == ['encoder', 'patch_embed']:
    return 0
  if keys[:2] == ['encoder', 'blocks']:
    return int(keys[2]) + 1
  assert keys[0] in ('fc_norm', 'head'), keys
  return L + 1


@pytest.mark.parametrize('decay', [0.75, 0.5])
def test_layer_decay_scales_match_videomae_formula(decay):
  params = _params()
  # run_class_finetuning.py: LayerDecayValueAssigner(list(decay ** (L + 1 - i) for i in ...)).
  values = [decay ** (L + 1 - i) for i in range(L + 2)]
  scales = optim.layer_decay_scales(params, decay, L)
  assert jax.tree.structure(scales) == jax.tree.structure(params)
  seen = set()
  for path, s in jax.tree_util.tree_leaves_with_path(scales):
    layer = _expected_layer(path)
    seen.add(layer)
    assert isinstance(s, float) and s == pytest.approx(values[layer]), path
  assert seen == set(range(L + 2))
  assert scales['head']['kernel'] == 1.0 and scales['fc_norm']['scale'] == 1.0
  assert scales['encoder']['patch_embed']['proj']['kernel'] == pytest.approx(decay ** (L + 1))
  assert scales['encoder']['blocks'][L - 1]['mlp']['fc2']['bias'] == pytest.approx(decay)


def test_layer_decay_one_is_all_ones():
  assert set(jax.tree.leaves(optim.layer_decay_scales(_params(), 1.0, L))) == {1.0}


@pytest.mark.parametrize('name, layer', [
    ('patch_embed.proj.weight', 0), ('encoder/patch_embed/proj/bias', 0),
    ('pos_embed', 0), ('cls_token', 0), ('mask_token', 0),
    ('blocks.0.norm1.weight', 1), ('encoder/blocks/2/attn/q_bias', 3),
    ('encoder/blocks/1/mlp/fc1/kernel', 2),
    ('fc_norm.weight', L + 1), ('head/kernel', L + 1), ('head.bias', L + 1),
    ('norm.weight', L + 1)])
def test_layer_id_of_names(name, layer):
  assert optim.layer_id(name, L) == layer
  assert optim.layer_id(tuple(name.replace('.', '/').split('/')), L) == layer


def test_layer_id_from_key_paths_with_int_and_str_block_keys():
  for blocks_key in (1, '1'):
    params = {'encoder': {'blocks': {blocks_key: {'attn': {'qkv': {'kernel': jnp.ones((2, 6))}}}}}}
    (path, _), = jax.tree_util.tree_leaves_with_path(params)
    assert optim.layer_id(path, L) == 2


def test_layer_id_rejects_bad_block_paths():
  with pytest.raises(ValueError, match='num_layers'):
    optim.layer_id('encoder/blocks/3/norm1/scale', 3)
  with pytest.raises(ValueError, match='block index'):
    optim.layer_id('blocks/norm1', 3)


def _config(**kw):
  return ml_collections.ConfigDict(
      {**dict(b1=0.9, b2=0.999, weight_decay=0.05, eps=1e-8, grad_clip=None), **kw})


LR = 1e-2


def _one_step(opt, params, grads):
  state = opt.init(params)
  updates, _ = jax.jit(opt.update)(grads, state, params)
  return updates


def test_scaled_adamw_step_is_s_times_the_unscaled_step_weight_decay_included():
  params = _params(1)
  grads = jax.tree.map(lambda p: p * 0.3 + 0.1, _params(2))
  decay = 0.75
  scales = optim.layer_decay_scales(params, decay, L)
  plain = _one_step(optim.make_optimizer(_config(), lambda _: LR), params, grads)
  scaled = _one_step(optim.make_optimizer(_config(), lambda _: LR, lr_scales=scales),
                     params, grads)
  for path, u in jax.tree_util.tree_leaves_with_path(plain):
    s = decay ** (L + 1 - _expected_layer(path))
    v = scaled
    for k in path:
      v = v[k.key]
    np.testing.assert_allclose(np.asarray(v), s * np.asarray(u), rtol=1e-6, err_msg=str(path))


def test_scaled_adamw_matches_torch_adamw_with_group_lr():
  # PyTorch AdamW, step 1, group lr = LR * s: p <- p * (1 - lr wd) - lr * m_hat / (sqrt(v_hat) +
  # eps), with m_hat = g and sqrt(v_hat) = |g|; wd = 0 for the no-decay group (1-D leaves).
  params = _params(3)
  grads = _params(4)
  decay, wd, eps = 0.75, 0.05, 1e-8
  scales = optim.layer_decay_scales(params, decay, L)
  opt = optim.make_optimizer(_config(weight_decay=wd), lambda _: LR, lr_scales=scales)
  updates = _one_step(opt, params, grads)
  new = optax.apply_updates(params, updates)
  flat_p = jax.tree_util.tree_leaves_with_path(params)
  for (path, p), g, q in zip(flat_p, jax.tree.leaves(grads), jax.tree.leaves(new)):
    p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
    lr = LR * decay ** (L + 1 - _expected_layer(path))
    this_wd = wd if p.ndim > 1 else 0.0
    expected = p * (1 - lr * this_wd) - lr * g / (np.abs(g) + eps)
    np.testing.assert_allclose(np.asarray(q), expected, rtol=1e-5, atol=1e-7, err_msg=str(path))


def test_weight_decay_term_alone_is_scaled():
  # Zero gradients: the Adam direction is 0, the update is -lr * s * wd * p on decayed leaves.
  params = _params(5)
  grads = jax.tree.map(jnp.zeros_like, params)
  scales = optim.layer_decay_scales(params, 0.5, L)
  updates = _one_step(optim.make_optimizer(_config(), lambda _: LR, lr_scales=scales),
                      params, grads)
  kernel = params['encoder']['patch_embed']['proj']['kernel']
  np.testing.assert_allclose(np.asarray(updates['encoder']['patch_embed']['proj']['kernel']),
                             -LR * 0.5 ** (L + 1) * 0.05 * np.asarray(kernel), rtol=1e-6)
  assert not np.any(np.asarray(updates['encoder']['patch_embed']['proj']['bias']))
  assert float(jnp.abs(updates['head']['kernel']).max()) > 0


def test_no_scales_keeps_the_optimizer_state_structure():
  params = _params()
  for clip in (None, 1.0):
    cfg = _config(grad_clip=clip)
    before = optim.make_optimizer(cfg, lambda _: LR).init(params)
    ones = optim.layer_decay_scales(params, 1.0, L)
    plain = optim.make_optimizer(cfg, lambda _: LR, lr_scales=None).init(params)
    assert jax.tree.structure(before) == jax.tree.structure(plain)
    scaled = optim.make_optimizer(cfg, lambda _: LR, lr_scales=ones)
    g = jax.tree.map(jnp.ones_like, params)
    a = _one_step(optim.make_optimizer(cfg, lambda _: LR), params, g)
    b = _one_step(scaled, params, g)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_decay_mask_matches_videomae_finetune_exclusions():
  # optim_factory.get_parameter_groups: no decay if 1-D, name ends with ".bias", or in
  # no_weight_decay() = {pos_embed, cls_token}.
  params = _params()
  mask = optim.decay_mask(params)
  for (path, p), decays in zip(jax.tree_util.tree_leaves_with_path(params),
                               jax.tree.leaves(mask)):
    name = '.'.join(str(getattr(k, 'key', k)) for k in path)
    videomae = not (p.ndim == 1 or name.endswith('.bias') or name in ('pos_embed', 'cls_token'))
    assert bool(decays) == videomae, name


def test_ema_update():
  ema = {'a': jnp.array([1.0, 2.0]), 'b': {'c': jnp.array(4.0, jnp.bfloat16)}}
  params = {'a': jnp.array([3.0, 0.0]), 'b': {'c': jnp.array(0.0, jnp.bfloat16)}}
  out = optim.ema_update(ema, params, 0.9)
  np.testing.assert_allclose(np.asarray(out['a']), [0.9 * 1 + 0.1 * 3, 0.9 * 2], rtol=1e-6)
  np.testing.assert_allclose(float(out['b']['c']), 3.6, rtol=1e-6)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(out))
  # n steps towards constant params: ema_n = p + decay**n (ema_0 - p).
  step = jax.jit(optim.ema_update)
  e = ema
  for _ in range(10):
    e = step(e, params, 0.9)
  p, e0 = np.array([3.0, 0.0]), np.array([1.0, 2.0])
  np.testing.assert_allclose(np.asarray(e['a']), p + 0.9 ** 10 * (e0 - p), rtol=1e-5)
