"""Tests for mgm_jax.export / torch_io and the export/import CLIs: PyTorch gives our numbers.

Shapes: `tiny` is the preset (16x64x64 clips, 8x4x4 = 128 tokens); ViT-B is the B preset at
4x224x224 (2x14x14 = 392 tokens, batch 1; frames hold no parameters). Masks are MGM at ratio
0.75 from a synthetic motion map (`torch_io.check_inputs`). Weights are NumPy-random, biases,
q/v biases and LayerNorm scales included, so that any dropped or misplaced tensor shows.
"""

import dataclasses
import os

from flax import nnx
import jax
import numpy as np
import pytest

from mgm_jax import export
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import schema
from mgm_jax import torch_io

torch = pytest.importorskip('torch')
from export_support import random_params as _random_params  # pylint: disable=g-import-not-at-top
from export_support import Block as _Block  # pylint: disable=g-import-not-at-top
from export_support import PatchEmbed as _PatchEmbed  # pylint: disable=g-import-not-at-top
from export_support import sinusoid as _sinusoid  # pylint: disable=g-import-not-at-top
transformers = pytest.importorskip('transformers')

TOL = 1e-4
CONFIGS = {
    'tiny': model_lib.model_config('tiny'),
    'B': model_lib.model_config('B', num_frames=4),
}


@pytest.fixture(scope='module', params=list(CONFIGS))
def case(request):
  """(size, cfg, params, our model, inputs (video, mask, num_masked), our outputs)."""
  cfg = CONFIGS[request.param]
  params = _random_params(cfg)
  model = model_lib.from_params(cfg, params)
  inputs = torch_io.check_inputs(cfg, seed=1)
  feats, pred = torch_io.jax_outputs(model, *inputs)
  return request.param, cfg, params, model, inputs, (feats, pred)


# ---------------------------------------------------------------------------------------------
# An independent official-layout VideoMAE (modeling_pretrain.py as documented in NOTES.md).


class _Encoder(torch.nn.Module):

  def __init__(self, cfg):
    super().__init__()
    d, eps = cfg.encoder_dim, cfg.layer_norm_eps
    self.patch_embed = _PatchEmbed(cfg)
    self.pos_embed = _sinusoid(cfg.num_patches, d)  # not a parameter
    self.blocks = torch.nn.ModuleList(
        [_Block(d, cfg.encoder_heads, cfg.mlp_ratio, eps) for _ in range(cfg.encoder_depth)])
    self.norm = torch.nn.LayerNorm(d, eps=eps)

  def forward(self, x, mask):
    x = self.patch_embed(x) + self.pos_embed
    b, _, c = x.shape
    x = x[~mask].reshape(b, -1, c)
    for blk in self.blocks:
      x = blk(x)
    return self.norm(x)


class _Decoder(torch.nn.Module):

  def __init__(self, cfg):
    super().__init__()
    d, eps = cfg.decoder_dim, cfg.layer_norm_eps
    self.blocks = torch.nn.ModuleList(
        [_Block(d, cfg.decoder_heads, cfg.mlp_ratio, eps) for _ in range(cfg.decoder_depth)])
    self.norm = torch.nn.LayerNorm(d, eps=eps)
    self.head = torch.nn.Linear(d, cfg.patch_dim)

  def forward(self, x, return_token_num):
    for blk in self.blocks:
      x = blk(x)
    return self.head(self.norm(x[:, -return_token_num:]))


class OfficialPretrainVideoMAE(torch.nn.Module):
  """PretrainVisionTransformer of MCG-NJU/VideoMAE (no layer scale, fixed sin-cos tables)."""

  def __init__(self, cfg):
    super().__init__()
    self.encoder, self.decoder = _Encoder(cfg), _Decoder(cfg)
    self.encoder_to_decoder = torch.nn.Linear(cfg.encoder_dim, cfg.decoder_dim, bias=False)
    self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
    self.pos_embed = _sinusoid(cfg.num_patches, cfg.decoder_dim)

  def forward(self, x, mask):
    """x [B, C, T, H, W], mask bool [B, N] -> (visible features, masked predictions)."""
    feats = self.encoder(x, mask)
    x_vis = self.encoder_to_decoder(feats)
    b, _, c = x_vis.shape
    pos = self.pos_embed.expand(b, -1, -1)
    pos_vis, pos_mask = pos[~mask].reshape(b, -1, c), pos[mask].reshape(b, -1, c)
    x_full = torch.cat([x_vis + pos_vis, self.mask_token + pos_mask], dim=1)
    return feats, self.decoder(x_full, pos_mask.shape[1])


# ---------------------------------------------------------------------------------------------
# Numbers: HF transformers and the official layout compute what we compute.


def _torch_input(video):
  """[B, T, H, W, C] -> HF's [B, T, C, H, W]."""
  return torch.from_numpy(np.ascontiguousarray(video.transpose(0, 1, 4, 2, 3)))


def test_hf_export_loads_strictly_and_matches(case, tmp_path):
  size, cfg, params, model, (video, mask, _), (feats, pred) = case
  torch_io.save_hf(params, cfg, True, tmp_path)
  hf, info = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path,
                                                                 output_loading_info=True)
  assert {k: list(v) for k, v in info.items()} == {
      'missing_keys': [], 'unexpected_keys': [], 'mismatched_keys': [], 'error_msgs': []}
  hf.eval()
  assert hf.config.norm_pix_loss and hf.config.layer_norm_eps == cfg.layer_norm_eps
  hf_feats, hf_pred_as_loaded = torch_io.hf_outputs(hf, video, mask)
  hf.decoder.norm.eps = cfg.layer_norm_eps  # HF hard-codes 1e-5 there (documented)
  _, hf_pred = torch_io.hf_outputs(hf, video, mask)
  diffs = dict(features=np.abs(feats - hf_feats).max(), predictions=np.abs(pred - hf_pred).max(),
               as_loaded=np.abs(pred - hf_pred_as_loaded).max())
  print(f'HF {size}: {diffs}')
  assert diffs['features'] < TOL and diffs['predictions'] < TOL, diffs
  assert diffs['as_loaded'] < 1e-3, diffs  # the eps 1e-5 vs 1e-6 effect: small, not zero

  enc, info = transformers.VideoMAEModel.from_pretrained(tmp_path, output_loading_info=True)
  pretraining_only = [k for k in export.hf_names(cfg) if not k.startswith('videomae.')]
  assert (sorted(export.hf_bias_keys(dict.fromkeys(info['unexpected_keys']), 'checkpoint')) ==
          sorted(pretraining_only))
  assert not info['missing_keys'] and not info['mismatched_keys']
  with torch.no_grad():
    all_feats = enc.eval()(_torch_input(video)).last_hidden_state.numpy()
  ours = np.asarray(nnx.jit(lambda m, v: m.encode(v))(model, video))
  assert np.abs(all_feats - ours).max() < TOL


def test_official_export_matches_independent_module(case, tmp_path):
  size, cfg, params, _, (video, mask, _), (feats, pred) = case
  paths = torch_io.save_videomae(params, cfg, tmp_path)
  checkpoint = torch.load(paths['pth'], map_location='cpu', weights_only=True)
  assert list(checkpoint) == ['model']
  assert all(isinstance(v, torch.Tensor) for v in checkpoint['model'].values())
  official = OfficialPretrainVideoMAE(cfg).eval()
  official.load_state_dict(checkpoint['model'], strict=True)
  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3)))  # B C T H W
    got_feats, got_pred = official(x, torch.from_numpy(mask))
  diffs = dict(features=np.abs(feats - got_feats.numpy()).max(),
               predictions=np.abs(pred - got_pred.numpy()).max())
  print(f'official {size}: {diffs}')
  assert diffs['features'] < TOL and diffs['predictions'] < TOL, diffs
  from_st = torch_io.load_videomae(paths['safetensors'])
  for k, v in checkpoint['model'].items():
    np.testing.assert_array_equal(from_st[k], v.numpy())


# ---------------------------------------------------------------------------------------------
# Round trips and strictness (tiny only: the mapping does not depend on the size).


@pytest.fixture(scope='module')
def tiny():
  cfg = CONFIGS['tiny']
  return cfg, _random_params(cfg, seed=3)


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert jax.tree.structure(a) == jax.tree.structure(b)


def test_round_trips_are_bit_exact(tiny, tmp_path):
  cfg, params = tiny
  sd = export.to_videomae_state_dict(params)
  _assert_same(export.from_videomae_state_dict(sd, cfg), params)
  _assert_same(export.from_hf_state_dict(export.to_hf_state_dict(params, cfg), cfg), params)
  paths = torch_io.save_videomae(params, cfg, tmp_path / 'official')
  for path in paths.values():
    _assert_same(export.from_videomae_state_dict(torch_io.load_videomae(path), cfg), params)
  torch_io.save_hf(params, cfg, False, tmp_path / 'hf')
  hf_sd, hf_cfg = torch_io.load_hf(tmp_path / 'hf')
  assert export.model_config_from_hf(hf_cfg) == cfg and hf_cfg['norm_pix_loss'] is False
  _assert_same(export.from_hf_state_dict(hf_sd, cfg), params)


def test_official_names_and_shapes(tiny):
  cfg, params = tiny
  sd = export.to_videomae_state_dict(params)
  assert sd['encoder.patch_embed.proj.weight'].shape == (128, 3, 2, 16, 16)
  assert sd['encoder.blocks.3.attn.qkv.weight'].shape == (384, 128)
  assert sd['encoder.blocks.0.attn.q_bias'].shape == (128,)
  assert sd['decoder.blocks.1.attn.v_bias'].shape == (64,)
  assert sd['encoder_to_decoder.weight'].shape == (64, 128)
  assert sd['mask_token'].shape == (1, 1, 64)
  assert sd['decoder.head.weight'].shape == (1536, 64)
  assert sd['encoder.norm.weight'].shape == (128,)
  assert not any('qkv.bias' in k or k.endswith('kernel') or 'scale' in k for k in sd)
  recorded = export.videomae_recorded_fields(sd)  # what the shapes tell of the architecture
  assert recorded == {k: getattr(cfg, k) for k in recorded} and len(recorded) == 8
  assert export.official_shapes(cfg) == {k: v.shape for k, v in sd.items()}


def test_hf_names_are_those_of_installed_transformers(tiny):
  cfg, _ = tiny
  want = torch_io.hf_expected_shapes(export.hf_config(cfg, True))  # the module's own names
  style = 'module' if transformers.__version__ >= '5' else 'checkpoint'
  assert sorted(export.hf_bias_keys(dict.fromkeys(export.hf_names(cfg)), style)) == sorted(want)
  assert 'videomae.encoder.layer.0.attention.attention.q_bias' in export.hf_names(cfg)
  assert 'videomae.encoder.layer.0.attention.attention.key.bias' not in want


def _safetensors_keys(path):
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(str(path), 'np') as f:
    return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, f.metadata()


def test_hf_export_writes_exactly_what_save_pretrained_writes(tiny, tmp_path):
  """transformers 4.x loads only the names `save_pretrained` writes (q_bias / v_bias)."""
  cfg, params = tiny
  reference = transformers.VideoMAEForPreTraining(
      transformers.VideoMAEConfig(**export.hf_config(cfg, True)))
  reference.save_pretrained(tmp_path / 'reference')
  torch_io.save_hf(params, cfg, True, tmp_path / 'ours')
  want, want_meta = _safetensors_keys(tmp_path / 'reference' / 'model.safetensors')
  got, got_meta = _safetensors_keys(tmp_path / 'ours' / 'model.safetensors')
  assert sorted(got) == sorted(want)
  assert got == want and got_meta == want_meta
  assert sorted(os.listdir(tmp_path / 'ours')) == sorted(os.listdir(tmp_path / 'reference'))
  assert 'videomae.encoder.layer.0.attention.attention.q_bias' in got


@pytest.mark.parametrize('fmt', ['videomae', 'hf'])
def test_missing_unexpected_and_misshaped_keys_are_named(tiny, fmt):
  cfg, params = tiny
  if fmt == 'videomae':
    sd, load = export.to_videomae_state_dict(params), export.from_videomae_state_dict
    victim = 'decoder.blocks.1.attn.v_bias'
  else:
    sd = export.to_hf_state_dict(params, cfg)
    load = export.from_hf_state_dict
    victim = 'decoder.decoder_layers.1.attention.attention.v_bias'
  missing = {k: v for k, v in sd.items() if k != victim}
  with pytest.raises(KeyError, match=victim.replace('.', r'\.')):
    load(missing, cfg)
  with pytest.raises(KeyError, match='encoder.blocks.0.attn.k_bias'):
    load({**sd, 'encoder.blocks.0.attn.k_bias': np.zeros(128, np.float32)}, cfg)
  with pytest.raises(ValueError, match=victim.replace('.', r'\.')):
    load({**sd, victim: np.zeros(65, np.float32)}, cfg)
  with pytest.raises(KeyError, match='missing keys'):  # a different architecture
    load(sd, dataclasses.replace(cfg, encoder_depth=5))


def test_hf_import_reads_both_q_v_bias_namings(tiny):
  cfg, params = tiny
  sd = export.to_hf_state_dict(params, cfg)
  module = export.hf_bias_keys(sd, 'module')  # transformers 5.x module names
  assert 'videomae.encoder.layer.0.attention.attention.query.bias' in module
  assert not any(k.endswith(('q_bias', 'v_bias')) for k in module)
  _assert_same(export.from_hf_state_dict(module, cfg), params)
  _assert_same(export.from_hf_state_dict(sd, cfg), params)
  both = {**sd, 'videomae.encoder.layer.0.attention.attention.query.bias': np.zeros(128)}
  with pytest.raises(KeyError, match=r'layer\.0\.attention\.attention\.q_bias is given under '
                     'both'):
    export.from_hf_state_dict(both, cfg)


def test_hf_check_names_the_key_transformers_would_not_load(tiny):
  cfg, params = tiny
  sd = export.to_hf_state_dict(params, cfg)
  sd['videomae.encoder.layer.0.attention.attention.key.bias'] = np.zeros(128, np.float32)
  with pytest.raises(KeyError, match=r'key\.bias'):
    torch_io.check_hf_state_dict(sd, export.hf_config(cfg, True))


# ---------------------------------------------------------------------------------------------
# Output directories and files.


def _written_files(directory):
  return sorted(p for p in directory.rglob('*') if p.is_file())


def test_written_files_are_readable_by_everyone(tiny, tmp_path):
  """As any file `open()` creates (safetensors itself creates them 0600)."""
  cfg, params = tiny
  old = os.umask(0o022)
  try:
    torch_io.save_hf(params, cfg, True, tmp_path / 'hf')
    torch_io.save_videomae(params, cfg, tmp_path / 'official')
  finally:
    os.umask(old)
  files = _written_files(tmp_path)
  assert len(files) == 5
  for path in files:
    assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))


def test_export_refuses_a_non_empty_directory_and_overwrite_leaves_no_stale_weights(
    tiny, tmp_path):
  cfg, params = tiny
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'pytorch_model.bin').write_bytes(b'stale weights of an earlier export')
  with pytest.raises(FileExistsError, match=r'not empty \(pytorch_model\.bin\)'):
    torch_io.save_hf(params, cfg, True, out)
  with pytest.raises(FileExistsError, match='pytorch_model.bin'):
    torch_io.save_videomae(params, cfg, out)
  assert os.listdir(out) == ['pytorch_model.bin']  # nothing written, nothing removed

  (out / 'notes.txt').write_text('mine')
  assert torch_io.clear_export_dir(out, overwrite=True) == ['pytorch_model.bin']
  torch_io.save_hf(params, cfg, True, out, overwrite=True)
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors', 'notes.txt']
  # The official layout over an HF export: the HF files go, the user's file stays.
  assert torch_io.clear_export_dir(out, overwrite=True) == ['config.json', 'model.safetensors']
  torch_io.save_videomae(params, cfg, out, overwrite=True)
  assert sorted(os.listdir(out)) == ['model_config.json', 'notes.txt',
                                     'videomae_pretrain.pth', 'videomae_pretrain.safetensors']


# ---------------------------------------------------------------------------------------------
# Imports: the config must fit the weights; every mismatch is named.


def test_fit_config_names_every_mismatching_field():
  config = schema.load('configs/ssv2.py')  # size B, 16 x 224 px, norm_pix True
  tiny = {f: getattr(model_lib.model_config('tiny', num_frames=4, img_size=(32, 32)), f)
          for f in export.ARCH_FIELDS}
  with pytest.raises(export.ConfigMismatchError) as info:
    export.fit_config(tiny, config, norm_pix=False)
  message = str(info.value)
  for part in ("the weights have encoder_dim 128 but --config's model.size='B' gives 768",
               "the weights have img_size (32, 32) but --config's model.img_size=224 gives "
               "(224, 224)", "the weights have num_frames 4 but --config's model.num_frames=16",
               "the weights have decoder_heads 2 but", 'norm_pix=False',
               'pass --config.model.size=tiny --config.model.img_size=32 '
               '--config.model.num_frames=4 --config.loss.norm_pix=False'):
    assert part in message, message
  fitted = schema.load('configs/ssv2.py', '--config.model.size=tiny', '--config.model.img_size=32',
                       '--config.model.num_frames=4', '--config.loss.norm_pix=False')
  assert export.fit_config(tiny, fitted, norm_pix=False) == model_lib.model_config_from(
      fitted.model)

  odd = dict(tiny, encoder_dim=64, encoder_heads=2)  # no preset has it
  with pytest.raises(export.ConfigMismatchError, match='no preset size has this architecture: '
                     r'use a config file whose model section sets img_size=\(32, 32\)'):
    export.fit_config(odd, fitted)
  with pytest.raises(export.ConfigMismatchError,
                     match=r'img_size \(32, 48\): the trainer needs square clips'):
    export.fit_config(dict(tiny, img_size=(32, 48)), fitted)


def test_import_of_non_square_or_mismatched_weights_is_a_clear_error(tmp_path):
  config = schema.load('configs/demo.py')  # tiny, 96 px
  frames = config.model.num_frames
  wide = model_lib.model_config('tiny', num_frames=frames, img_size=(32, 48))
  torch_io.save_hf(_random_params(wide), wide, False, tmp_path / 'wide')
  with pytest.raises(export.ConfigMismatchError,
                     match=r'^img_size \(32, 48\): the trainer needs square clips'):
    torch_io.import_run(tmp_path / 'wide', 'hf', tmp_path / 'run_wide', config)
  narrow = model_lib.model_config('tiny', num_frames=frames, img_size=(96, 96), encoder_dim=64,
                                  encoder_heads=2)
  params = _random_params(narrow)
  torch_io.save_hf(params, narrow, False, tmp_path / 'narrow')
  torch_io.save_videomae(params, narrow, tmp_path / 'official', norm_pix=False)
  os.remove(tmp_path / 'official' / torch_io.MODEL_CONFIG_FILE)  # shapes only
  for fmt, src in (('hf', 'narrow'), ('videomae', 'official/videomae_pretrain.pth')):
    with pytest.raises(export.ConfigMismatchError,
                       match="^the weights have encoder_dim 64 but --config's model.size='tiny' "
                       'gives 128'):
      torch_io.import_run(tmp_path / src, fmt, tmp_path / f'run_{fmt}', config)
    assert not (tmp_path / f'run_{fmt}').exists()


# ---------------------------------------------------------------------------------------------
# A run -> PyTorch (checked) -> a run the trainer restores, bit-exact (what the commands do).


def test_export_and_import_runs(tmp_path):
  config = schema.load('configs/demo.py')
  cfg = model_lib.model_config_from(config.model)
  params = _random_params(cfg, seed=4)
  inference.save(tmp_path / 'run', config, params, step=3)
  for fmt, src in (('hf', 'hf'), ('videomae', 'videomae/videomae_pretrain.pth')):
    run, removed = torch_io.export_run(str(tmp_path / 'run'), str(tmp_path / fmt), fmt)
    assert run.step == 3 and removed == []
    diffs = torch_io.verify_export(run, str(tmp_path / fmt), fmt)
    assert diffs['features'] < TOL and diffs['predictions_eps_matched'] < TOL, diffs
    torch_io.import_run(tmp_path / src, fmt, tmp_path / f'back_{fmt}', config)
    back = inference.load(tmp_path / f'back_{fmt}')
    assert back.step == 0 and back.config.to_json() == config.to_json()  # JSON: tuples -> lists
    _assert_same(nnx.to_pure_dict(nnx.state(back.model, nnx.Param)), params)
  with pytest.raises(FileExistsError, match='is not an empty directory'):
    torch_io.import_run(tmp_path / 'hf', 'hf', tmp_path / 'back_hf', config)
  with pytest.raises(FileExistsError, match='is not empty'):
    torch_io.export_run(str(tmp_path / 'run'), str(tmp_path / 'hf'), 'videomae')
