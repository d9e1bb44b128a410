"""Tests for mgm_jax.model: shapes, VideoMAE equivalence, masking semantics, options."""

import dataclasses
import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgm_jax import model as M

# A very small model for behavioural tests (fast to compile); `tiny` is used for the real shapes.
# 2 x 2 x 3 = 12 tokens; tests share NUM_MASKED so that jitted forwards are compiled once.
MICRO = M.model_config('tiny', img_size=(32, 48), num_frames=4, encoder_dim=64, encoder_depth=2,
                       encoder_heads=2, decoder_dim=32, decoder_depth=2, decoder_heads=2)
NUM_MASKED = 9


@functools.partial(nnx.jit, static_argnames=('num_masked', 'deterministic'))
def _forward(model, video, mask, num_masked, deterministic=True):
  return model(video, mask, num_masked=num_masked, deterministic=deterministic)


@functools.partial(nnx.jit, static_argnames=('num_masked',))
def _encode(model, video, mask, num_masked):
  return model.encode(video, mask, num_masked)


def _random_mask(rng, batch, num_tokens, num_masked):
  mask = np.zeros((batch, num_tokens), bool)
  for row in mask:
    row[rng.permutation(num_tokens)[:num_masked]] = True
  return mask


def _video(rng, cfg, batch=2):
  shape = (batch, cfg.num_frames, *cfg.img_size, cfg.in_chans)
  return rng.standard_normal(shape).astype(np.float32)


def _numpy_params(model, seed=1):
  """Fills every parameter with NumPy noise (no XLA compiles), biases and q/v biases included."""
  rng = np.random.default_rng(seed)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    shape = var.shape
    if path[-1] == 'scale':
      value = 1 + 0.1 * rng.standard_normal(shape)
    elif path[-1] == 'kernel':
      value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[:-1]))
    else:
      value = 0.1 * rng.standard_normal(shape)
    var.set_value(jnp.asarray(value, jnp.float32))


def _make(cfg, seed=1):
  """A model with the structure of `cfg` and NumPy-random parameters, cheaply.

  Real initialisation compiles every initialiser; only the tests about initialisation need it.
  """
  model = nnx.eval_shape(lambda: M.MaskedAutoencoder(cfg, rngs=nnx.Rngs(params=0, dropout=1)))
  for i, (_, var) in enumerate(nnx.to_flat_state(nnx.state(model, nnx.RngKey))):
    var.set_value(jax.random.fold_in(jax.random.key(seed), i))
  for _, var in nnx.to_flat_state(nnx.state(model, nnx.RngCount)):
    var.set_value(jnp.zeros(var.shape, var.dtype))
  _numpy_params(model, seed)
  return model


def _copy_params(src, dst):
  nnx.update(dst, nnx.state(src, nnx.Param))


def _num_params(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@pytest.fixture(scope='module')
def micro():
  return _make(MICRO)


# ---------------------------------------------------------------------------------------------
# Config.


@pytest.mark.parametrize('size,enc,dec', [
    ('S', (384, 12, 6), (192, 4, 3)),
    ('B', (768, 12, 12), (384, 4, 6)),
    ('L', (1024, 24, 16), (512, 12, 8)),
    ('H', (1280, 32, 16), (640, 12, 8)),
])
def test_sizes(size, enc, dec):
  cfg = M.model_config(size)
  assert (cfg.encoder_dim, cfg.encoder_depth, cfg.encoder_heads) == enc
  assert (cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads) == dec
  assert (cfg.img_size, cfg.num_frames, cfg.tubelet, cfg.patch) == ((224, 224), 16, 2, 16)
  assert (cfg.mlp_ratio, cfg.layer_norm_eps, cfg.patch_dim) == (4.0, 1e-6, 1536)
  assert cfg.num_patches == 1568


@pytest.mark.parametrize('overrides,field', [
    (dict(img_size=(64, 72)), 'img_size'),
    (dict(patch=12), 'img_size'),
    (dict(num_frames=15), 'num_frames'),
    (dict(encoder_dim=130), 'encoder_dim'),
    (dict(decoder_heads=3), 'decoder_dim'),
    (dict(dtype='float16'), 'dtype'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
    (dict(attention_impl='flash'), 'attention_impl'),
    (dict(encoder_depth=0), 'encoder_depth'),
    (dict(colour=True), 'colour'),
])
def test_config_validation_names_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    M.model_config('tiny', **overrides)


def test_unknown_size():
  with pytest.raises(ValueError, match='XL'):
    M.model_config('XL')


def test_config_is_hashable_and_list_img_size_ok():
  cfg = M.model_config('tiny', img_size=[64, 64])
  assert cfg.img_size == (64, 64) and hash(cfg) == hash(M.model_config('tiny'))


# ---------------------------------------------------------------------------------------------
# Shapes and parameter counts.


def test_tiny_forward_shapes():
  cfg = M.model_config('tiny')
  model = _make(cfg)
  rng = np.random.default_rng(0)
  num_masked = 96  # ratio 0.75 of 8 * 4 * 4 = 128 tokens
  mask = _random_mask(rng, 2, cfg.num_patches, num_masked)
  pred = _forward(model, _video(rng, cfg), mask, num_masked=num_masked)
  assert pred.shape == (2, num_masked, 1536) and pred.dtype == jnp.float32
  assert np.all(np.isfinite(pred)) and np.abs(pred).max() > 0
  video = jax.ShapeDtypeStruct((2, 16, 64, 64, 3), jnp.float32)
  assert nnx.eval_shape(lambda m, v: m.encode(v), model, video).shape == (2, 128, 128)
  grid_mask = jax.ShapeDtypeStruct((2, 8, 4, 4), jnp.bool_)
  feats = nnx.eval_shape(lambda m, v, k: m.encode(v, k, num_masked), model, video, grid_mask)
  assert feats.shape == (2, 32, 128)


def _param_count_by_formula(cfg):
  """Counts from the official layout (modeling_pretrain.py), independently of the model code."""

  def block(d):
    hidden = int(d * cfg.mlp_ratio)
    norms = 2 * (d + d)
    attn = d * 3 * d + d + d + (d * d + d)  # qkv (no bias), q_bias, v_bias, proj
    mlp = (d * hidden + hidden) + (hidden * d + d)
    return norms + attn + mlp

  d, dd = cfg.encoder_dim, cfg.decoder_dim
  patch_embed = 3 * 2 * 16 * 16 * d + d
  encoder = patch_embed + cfg.encoder_depth * block(d) + 2 * d
  decoder = cfg.decoder_depth * block(dd) + 2 * dd + (dd * 1536 + 1536)
  return encoder, encoder + d * dd + dd + decoder


@pytest.mark.parametrize('size', ['S', 'B', 'L', 'H'])
def test_abstract_shapes_and_param_counts(size):
  cfg = M.model_config(size)
  abstract = nnx.eval_shape(lambda: M.MaskedAutoencoder(cfg, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  enc_count, total_count = _param_count_by_formula(cfg)
  assert _num_params(nnx.state(abstract.encoder, nnx.Param)) == enc_count
  assert _num_params(params) == total_count
  num_masked = int(0.9 * cfg.num_patches)
  video = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.float32)
  mask = jax.ShapeDtypeStruct((2, cfg.num_patches), jnp.bool_)
  pred = nnx.eval_shape(lambda m, v, k: m(v, k, num_masked=num_masked), abstract, video, mask)
  assert pred.shape == (2, num_masked, 1536) and pred.dtype == jnp.float32
  feats = nnx.eval_shape(lambda m, v: m.encode(v), abstract, video)
  assert feats.shape == (2, 1568, cfg.encoder_dim)


def test_param_paths_mirror_videomae():
  abstract = nnx.eval_shape(lambda: M.MaskedAutoencoder(M.model_config('tiny'), rngs=nnx.Rngs(0)))
  paths = {'/'.join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
  block = ['norm1/scale', 'norm1/bias', 'attn/qkv/kernel', 'attn/q_bias', 'attn/v_bias',
           'attn/proj/kernel', 'attn/proj/bias', 'norm2/scale', 'norm2/bias', 'mlp/fc1/kernel',
           'mlp/fc1/bias', 'mlp/fc2/kernel', 'mlp/fc2/bias']
  expected = {'encoder/patch_embed/proj/kernel', 'encoder/patch_embed/proj/bias',
              'encoder/norm/scale', 'encoder/norm/bias', 'encoder_to_decoder/kernel',
              'mask_token', 'decoder/norm/scale', 'decoder/norm/bias', 'decoder/head/kernel',
              'decoder/head/bias'}
  expected |= {f'encoder/blocks/{i}/{b}' for i in range(4) for b in block}
  expected |= {f'decoder/blocks/{i}/{b}' for i in range(2) for b in block}
  assert paths == expected
  # No other state at all with drop path off (position tables are constants, not variables).
  assert _num_params(nnx.state(abstract)) == _num_params(nnx.state(abstract, nnx.Param))


def test_init_matches_videomae():
  # Few distinct shapes: eager initialisation compiles each initialiser per shape.
  cfg = dataclasses.replace(MICRO, encoder_dim=32, decoder_dim=32, encoder_depth=1,
                            decoder_depth=1)
  model = M.MaskedAutoencoder(cfg, rngs=nnx.Rngs(0))
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name, value = '/'.join(map(str, path)), np.asarray(var[...])
    if name.endswith('bias') and 'patch_embed' not in name:
      np.testing.assert_array_equal(value, 0, err_msg=name)  # incl. q_bias, v_bias
    elif name.endswith('scale'):
      np.testing.assert_array_equal(value, 1, err_msg=name)
    elif name.endswith('kernel') and 'patch_embed' not in name:
      bound = math.sqrt(6 / sum(value.shape))  # xavier-uniform
      assert np.abs(value).max() <= bound and value.std() > 0.5 * bound / math.sqrt(3), name
  token = np.asarray(model.mask_token[...])
  assert np.abs(token).max() <= 0.02 and token.std() > 0.005
  conv = model.encoder.patch_embed.proj
  bound = 1 / math.sqrt(cfg.patch_dim)  # PyTorch's default Conv3d init
  for value in (np.asarray(conv.kernel[...]), np.asarray(conv.bias[...])):
    assert np.abs(value).max() <= bound and np.abs(value).max() > 0.9 * bound


def _reference_table(n_position, d_hid):
  """VideoMAE's get_sinusoid_encoding_table, written out with Python loops."""
  table = np.zeros((n_position, d_hid))
  for pos in range(n_position):
    for j in range(d_hid):
      angle = pos / np.power(10000, 2 * (j // 2) / d_hid)
      table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
  return table.astype(np.float32)


@pytest.mark.parametrize('n,d', [(8, 6), (128, 64), (1568, 96)])
def test_position_table_matches_videomae_formula(n, d):
  np.testing.assert_allclose(M.sinusoid_table(n, d), _reference_table(n, d), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Masking semantics.


@pytest.mark.parametrize('shape,num_masked', [((3, 40), 30), ((2, 2, 3, 4), 5), ((1, 7), 6)])
def test_split_token_indices_matches_numpy(shape, num_masked):
  rng = np.random.default_rng(0)
  mask = _random_mask(rng, shape[0], math.prod(shape[1:]), num_masked).reshape(shape)
  visible, masked = M.split_token_indices(jnp.asarray(mask), num_masked)
  flat = mask.reshape(shape[0], -1)
  positions = np.broadcast_to(np.arange(flat.shape[1]), flat.shape)
  np.testing.assert_array_equal(masked, positions[flat].reshape(shape[0], -1))
  np.testing.assert_array_equal(visible, positions[~flat].reshape(shape[0], -1))


def test_matches_boolean_indexing_reference(micro):
  """The official forward, step by step with `x[~mask]` / `pos[mask]` (VideoMAE's order)."""
  cfg, rng, num_masked = MICRO, np.random.default_rng(1), NUM_MASKED
  video, mask = _video(rng, cfg), _random_mask(rng, 2, cfg.num_patches, num_masked)

  @nnx.jit
  def reference(model, video):  # `mask` is a NumPy constant: boolean indexing is static.
    x = model.encoder.patch_embed(video) + _reference_table(cfg.num_patches, cfg.encoder_dim)
    x = x[~mask].reshape(2, -1, cfg.encoder_dim)
    for blk in model.encoder.blocks:
      x = blk(x)
    x = model.encoder_to_decoder(model.encoder.norm(x))
    pos = np.broadcast_to(_reference_table(cfg.num_patches, cfg.decoder_dim),
                          (2, cfg.num_patches, cfg.decoder_dim))
    x = jnp.concatenate([x + pos[~mask].reshape(2, -1, cfg.decoder_dim),
                         model.mask_token[...] + pos[mask].reshape(2, -1, cfg.decoder_dim)], 1)
    for blk in model.decoder.blocks:
      x = blk(x)
    return model.decoder.head(model.decoder.norm(x[:, -num_masked:]))

  pred = _forward(micro, video, mask, num_masked=num_masked)
  np.testing.assert_allclose(pred, reference(micro, video), rtol=1e-5, atol=1e-5)


def _pixel_mask(token_mask, cfg):
  """Token mask [B, N] -> pixel mask [B, T, H, W, 1]."""
  grid = token_mask.reshape(-1, *cfg.grid)
  for axis, size in ((1, cfg.tubelet), (2, cfg.patch), (3, cfg.patch)):
    grid = np.repeat(grid, size, axis=axis)
  return grid[..., None]


def test_prediction_ignores_masked_pixels_and_uses_visible_ones(micro):
  cfg, rng, num_masked = MICRO, np.random.default_rng(2), NUM_MASKED
  video, mask = _video(rng, cfg), _random_mask(rng, 2, cfg.num_patches, num_masked)
  grid_mask = mask.reshape(2, *cfg.grid)  # [B, t, h, w] form, same meaning
  noise = 3 * rng.standard_normal(video.shape).astype(np.float32)
  pred = _forward(micro, video, mask, num_masked=num_masked)
  feats = _encode(micro, video, grid_mask, num_masked)
  masked_changed = np.where(_pixel_mask(mask, cfg), video + noise, video)
  np.testing.assert_allclose(_forward(micro, masked_changed, mask, num_masked=num_masked), pred,
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(_encode(micro, masked_changed, grid_mask, num_masked), feats,
                             rtol=0, atol=1e-6)
  one_visible = np.zeros_like(mask)
  one_visible[0, np.flatnonzero(~mask[0])[0]] = True  # a single visible tubelet of sample 0
  visible_changed = np.where(_pixel_mask(one_visible, cfg), video + noise, video)
  changed = _forward(micro, visible_changed, mask, num_masked=num_masked)
  assert np.abs(changed[0] - pred[0]).max() > 1e-3
  np.testing.assert_allclose(changed[1], pred[1], rtol=0, atol=1e-6)  # samples are independent
  changed_feats = _encode(micro, visible_changed, grid_mask, num_masked)
  assert np.abs(changed_feats[0] - feats[0]).max() > 1e-3


def test_mask_validation(micro):
  cfg, rng = MICRO, np.random.default_rng(3)
  video, mask = _video(rng, cfg), _random_mask(rng, 2, cfg.num_patches, 5)
  with pytest.raises(ValueError, match='num_masked=6'):
    micro(video, mask, num_masked=6)
  with pytest.raises(ValueError, match='num_masked must be in'):
    micro(video, np.ones_like(mask), num_masked=cfg.num_patches)
  with pytest.raises(ValueError, match='mask shape'):
    micro(video, mask[:, :-1], num_masked=5)
  with pytest.raises(TypeError, match='static Python int'):
    micro(video, mask, num_masked=jnp.int32(5))
  with pytest.raises(ValueError, match='video shape'):
    micro(video[:, :2], mask, num_masked=5)


def test_jit_static_num_masked(micro):
  cfg, rng = MICRO, np.random.default_rng(4)
  video = _video(rng, cfg)
  for num_masked in (NUM_MASKED, 3):  # a new static value compiles a new program
    mask = _random_mask(rng, 2, cfg.num_patches, num_masked)
    pred = _forward(micro, video, mask, num_masked=num_masked)
    assert pred.shape == (2, num_masked, cfg.patch_dim)
  with pytest.raises(TypeError, match='static Python int'):  # a traced count is refused
    jax.jit(lambda n: micro(video, mask, num_masked=n))(3)


# ---------------------------------------------------------------------------------------------
# Attention biases, drop path, remat, bf16.


@pytest.mark.parametrize('part', ['encoder', 'decoder'])
@pytest.mark.parametrize('bias', ['q_bias', 'v_bias'])
def test_q_and_v_biases_are_used(micro, part, bias):
  rng, num_masked = np.random.default_rng(5), NUM_MASKED
  video, mask = _video(rng, MICRO), _random_mask(rng, 2, MICRO.num_patches, num_masked)
  pred = _forward(micro, video, mask, num_masked=num_masked)
  attn = getattr(micro, part).blocks[0].attn
  var = getattr(attn, bias)
  old = var[...]
  try:
    var.set_value(old + jnp.asarray(rng.standard_normal(old.shape), jnp.float32))
    changed = _forward(micro, video, mask, num_masked=num_masked)
  finally:
    var.set_value(old)
  assert np.abs(changed - pred).max() > 1e-3
  assert attn.qkv.bias is None  # no k bias (fixed zero)


def test_drop_path_rates_rise_linearly():
  cfg = dataclasses.replace(MICRO, drop_path_rate=0.3, encoder_depth=4, decoder_depth=3)
  model = nnx.eval_shape(lambda: M.MaskedAutoencoder(cfg, rngs=nnx.Rngs(0)))
  np.testing.assert_allclose([b.drop_path.rate for b in model.encoder.blocks], [0, .1, .2, .3])
  np.testing.assert_allclose([b.drop_path.rate for b in model.decoder.blocks], [0, .15, .3])


def test_drop_path_off_when_deterministic_on_otherwise(micro):
  model = _make(dataclasses.replace(MICRO, drop_path_rate=0.5))
  _copy_params(micro, model)
  rng, num_masked = np.random.default_rng(6), NUM_MASKED
  video, mask = _video(rng, MICRO), _random_mask(rng, 2, MICRO.num_patches, num_masked)
  expected = _forward(micro, video, mask, num_masked=num_masked)  # no drop path at all
  np.testing.assert_allclose(_forward(model, video, mask, num_masked=num_masked), expected,
                             rtol=1e-6, atol=1e-6)
  train_a = _forward(model, video, mask, num_masked=num_masked, deterministic=False)
  train_b = _forward(model, video, mask, num_masked=num_masked, deterministic=False)
  assert np.abs(train_a - expected).max() > 1e-3
  assert np.abs(train_a - train_b).max() > 1e-3  # the 'dropout' stream advances


def _pred_and_grads(model, video, mask, num_masked, deterministic=True):
  def loss_fn(m):
    pred = m(video, mask, num_masked=num_masked, deterministic=deterministic)
    return jnp.mean(jnp.square(pred - 0.5)), pred
  (_, pred), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(model)
  return pred, nnx.state(grads, nnx.Param)


def test_remat_matches_plain():
  cfg = dataclasses.replace(MICRO, drop_path_rate=0.2, encoder_depth=2, decoder_depth=1)
  plain, remat = _make(cfg), _make(dataclasses.replace(cfg, remat=True))
  rng, num_masked = np.random.default_rng(7), NUM_MASKED
  video, mask = _video(rng, cfg), _random_mask(rng, 2, cfg.num_patches, num_masked)
  pred_p, grads_p = _pred_and_grads(plain, video, mask, num_masked, deterministic=False)
  pred_r, grads_r = _pred_and_grads(remat, video, mask, num_masked, deterministic=False)
  np.testing.assert_allclose(pred_r, pred_p, rtol=1e-5, atol=1e-5)  # same drop-path draws
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads_r, grads_p)
  attn = grads_p['encoder']['blocks'][1]['attn']
  assert np.abs(attn['q_bias'][...]).max() > 0 and np.abs(attn['v_bias'][...]).max() > 0


def test_bfloat16_close_to_float32(micro):
  model = _make(dataclasses.replace(MICRO, dtype='bfloat16'))
  _copy_params(micro, model)
  params = nnx.state(model, nnx.Param)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  rng, num_masked = np.random.default_rng(8), NUM_MASKED
  video, mask = _video(rng, MICRO), _random_mask(rng, 2, MICRO.num_patches, num_masked)
  pred32 = _forward(micro, video, mask, num_masked=num_masked)
  pred16, grads = _pred_and_grads(model, video, mask, num_masked)
  assert pred16.dtype == jnp.float32
  rel = np.linalg.norm(pred16 - pred32) / np.linalg.norm(pred32)
  assert rel < 3e-2, rel
  assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# ---------------------------------------------------------------------------------------------
# Against the PyTorch reference (HF transformers' VideoMAE, a port of the official code).


def _hf_config(cfg, **kw):
  from transformers import VideoMAEConfig  # pylint: disable=g-import-not-at-top
  return VideoMAEConfig(
      image_size=cfg.img_size, patch_size=cfg.patch, num_channels=cfg.in_chans,
      num_frames=cfg.num_frames, tubelet_size=cfg.tubelet, hidden_size=cfg.encoder_dim,
      num_hidden_layers=cfg.encoder_depth, num_attention_heads=cfg.encoder_heads,
      intermediate_size=int(cfg.encoder_dim * cfg.mlp_ratio),
      decoder_hidden_size=cfg.decoder_dim, decoder_num_hidden_layers=cfg.decoder_depth,
      decoder_num_attention_heads=cfg.decoder_heads,
      decoder_intermediate_size=int(cfg.decoder_dim * cfg.mlp_ratio),
      layer_norm_eps=cfg.layer_norm_eps, hidden_act='gelu', qkv_bias=True,
      use_mean_pooling=False, **kw)


@pytest.mark.slow
def test_vit_b_param_count_equals_hf_videomae():
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  cfg = M.model_config('B')
  # Small frames keep HF's Python-loop position tables cheap; they hold no parameters.
  with torch.device('meta'):
    hf_full = transformers.VideoMAEForPreTraining(
        _hf_config(dataclasses.replace(cfg, img_size=(32, 32), num_frames=2)))
  abstract = nnx.eval_shape(lambda: M.MaskedAutoencoder(cfg, rngs=nnx.Rngs(0)))
  hf_encoder_count = sum(p.numel() for p in hf_full.videomae.parameters())  # VideoMAEModel
  assert hf_encoder_count == 86_227_200
  assert _num_params(nnx.state(abstract.encoder, nnx.Param)) == hf_encoder_count
  assert _num_params(nnx.state(abstract, nnx.Param)) == sum(
      p.numel() for p in hf_full.parameters())


def _hf_state_dict(model, torch):
  """Our parameters under HF VideoMAEForPreTraining's names (PyTorch layouts)."""
  sd = {}

  def put(name, value):
    sd[name] = torch.from_numpy(np.array(value, np.float32))

  def linear(name, mod):
    put(f'{name}.weight', np.asarray(mod.kernel[...]).T)
    if mod.bias is not None:
      put(f'{name}.bias', mod.bias[...])

  def norm(name, mod):
    put(f'{name}.weight', mod.scale[...])
    put(f'{name}.bias', mod.bias[...])

  def block(name, blk):
    q, k, v = np.split(np.asarray(blk.attn.qkv.kernel[...]).T, 3, axis=0)
    for part, weight in (('query', q), ('key', k), ('value', v)):
      put(f'{name}.attention.attention.{part}.weight', weight)
    put(f'{name}.attention.attention.query.bias', blk.attn.q_bias[...])
    put(f'{name}.attention.attention.value.bias', blk.attn.v_bias[...])
    linear(f'{name}.attention.output.dense', blk.attn.proj)
    linear(f'{name}.intermediate.dense', blk.mlp.fc1)
    linear(f'{name}.output.dense', blk.mlp.fc2)
    norm(f'{name}.layernorm_before', blk.norm1)
    norm(f'{name}.layernorm_after', blk.norm2)

  conv = model.encoder.patch_embed.proj
  put('videomae.embeddings.patch_embeddings.projection.weight',
      np.asarray(conv.kernel[...]).transpose(4, 3, 0, 1, 2))
  put('videomae.embeddings.patch_embeddings.projection.bias', conv.bias[...])
  for i, blk in enumerate(model.encoder.blocks):
    block(f'videomae.encoder.layer.{i}', blk)
  norm('videomae.layernorm', model.encoder.norm)
  linear('encoder_to_decoder', model.encoder_to_decoder)
  put('mask_token', model.mask_token[...])
  for i, blk in enumerate(model.decoder.blocks):
    block(f'decoder.decoder_layers.{i}', blk)
  norm('decoder.norm', model.decoder.norm)
  linear('decoder.head', model.decoder.head)
  return sd


@pytest.mark.slow
def test_matches_hf_videomae_for_pretraining(micro):
  """Same weights in HF's PyTorch VideoMAE give the same prediction and the same loss."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  from mgm_jax import loss as L  # pylint: disable=g-import-not-at-top
  cfg = MICRO
  hf = transformers.VideoMAEForPreTraining(_hf_config(cfg, norm_pix_loss=True)).eval()
  hf.load_state_dict(_hf_state_dict(micro, torch), strict=True)
  hf.decoder.norm.eps = cfg.layer_norm_eps  # HF hard-codes the default 1e-5 there
  rng, num_masked = np.random.default_rng(9), NUM_MASKED
  video01 = rng.uniform(size=(2, cfg.num_frames, *cfg.img_size, 3)).astype(np.float32)
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  video = ((video01 - mean) / std).astype(np.float32)
  mask = _random_mask(rng, 2, cfg.num_patches, num_masked)
  with torch.no_grad():
    out = hf(torch.from_numpy(video.transpose(0, 1, 4, 2, 3).copy()),
             bool_masked_pos=torch.from_numpy(mask))
  pred = _forward(micro, video, mask, num_masked=num_masked)
  np.testing.assert_allclose(pred, out.logits.numpy(), rtol=1e-4, atol=1e-4)
  target = L.reconstruction_target(video01, cfg.tubelet, cfg.patch)
  loss = L.masked_mse(pred, target, mask, num_masked)
  np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-4)


def test_patch_embed_matmul_equals_the_strided_convolution():
  cfg = M.model_config('tiny', num_frames=4, img_size=(32, 48))
  embed = M.PatchEmbed(cfg, 24, rngs=nnx.Rngs(3))
  video = jax.random.normal(jax.random.key(0), (2, 4, 32, 48, 3))
  want = embed.proj(video).reshape(2, -1, 24)  # the nnx.Conv whose parameters it holds
  np.testing.assert_allclose(np.asarray(embed(video)), np.asarray(want), atol=1e-5, rtol=1e-5)
