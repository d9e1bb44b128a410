"""Tests for the classifier's export and import (mgm_jax.export / torch_io): PyTorch agrees.

One tiny classifier for the module (2 blocks of width 128, 4 x 32 x 32 clips = 2 x 2 x 2 tokens,
5 classes), compiled once. Weights are NumPy-random, biases, q/v biases and LayerNorm scales
included, so that any dropped or misplaced tensor shows. Our input is channels-last
[B, T, H, W, C], HF's [B, T, C, H, W], the official module's [B, C, T, H, W]; all
ImageNet-normalised.
"""

import json
import os
import re

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
import export_support  # pylint: disable=g-import-not-at-top
transformers = pytest.importorskip('transformers')

TOL = 1e-4
NAMES = ['archery', 'bowling', 'cycling', 'diving', 'eating spaghetti']
CFG = model_lib.model_config('tiny', num_frames=4, img_size=(32, 32), encoder_depth=2,
                             num_classes=5)
# The autoencoder with the same encoder (a pretraining source of the same backbone).
AE_CFG = model_lib.model_config('tiny', num_frames=4, img_size=(32, 32), encoder_depth=2)


@pytest.fixture(scope='module')
def tiny():
  """(params, video, our encoder features, our logits): the module's one compiled model."""
  params = export_support.random_params(CFG)
  video, _, _ = torch_io.check_inputs(CFG, seed=1)
  feats, logits = torch_io.jax_classifier_outputs(model_lib.from_params(CFG, params), video)
  return params, video, feats, logits


@pytest.fixture(scope='module')
def ae_params():
  return export_support.random_params(AE_CFG, seed=2)


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _torch_video(video):
  return torch.from_numpy(np.ascontiguousarray(video.transpose(0, 1, 4, 2, 3)))


def _hf_logits(hf, video, fc_norm_eps=None):
  if fc_norm_eps is not None:
    hf.fc_norm.eps = fc_norm_eps
  with torch.no_grad():
    return hf(pixel_values=_torch_video(video)).logits.numpy()


def _config(**model):
  """A run config (the schema's defaults) whose model is CFG's."""
  config = schema.defaults()
  config.model.update(size='tiny', num_frames=4, img_size=32, num_classes=5, dtype='float32')
  config.model.encoder_depth = 2  # no preset has 2 blocks: as a config file may set it
  config.model.update(model)
  return config


# ---------------------------------------------------------------------------------------------
# HF VideoMAEForVideoClassification.


def test_hf_export_loads_strictly_and_gives_our_logits(tiny, tmp_path):
  params, video, feats, logits = tiny
  torch_io.save_hf(params, CFG, True, tmp_path, class_names=NAMES)
  hf, info = transformers.VideoMAEForVideoClassification.from_pretrained(
      tmp_path, output_loading_info=True)
  assert {k: list(v) for k, v in info.items()} == {
      'missing_keys': [], 'unexpected_keys': [], 'mismatched_keys': [], 'error_msgs': []}
  hf.eval()
  c = hf.config
  assert c.use_mean_pooling and hf.videomae.layernorm is None and c.num_labels == 5
  assert c.id2label == dict(enumerate(NAMES)) and c.label2id == {n: i for i, n in
                                                                 enumerate(NAMES)}
  assert (c.layer_norm_eps, c.image_size, c.num_frames, c.tubelet_size, c.patch_size) == (
      1e-6, 32, 4, 2, 16)
  # The transformers 5.x trap: q/v biases loaded, not left at zero.
  attn = hf.videomae.encoder.layer[1].attention.attention
  bias = attn.query.bias if hasattr(attn, 'query') and attn.query.bias is not None else (
      attn.q_bias)
  np.testing.assert_array_equal(bias.detach().numpy(), params['encoder']['blocks'][1]['attn']
                                ['q_bias'])
  as_loaded = _hf_logits(hf, video)
  matched = _hf_logits(hf, video, fc_norm_eps=CFG.layer_norm_eps)
  with torch.no_grad():
    hf_feats = hf.videomae(_torch_video(video)).last_hidden_state.numpy()
  diffs = dict(logits=np.abs(logits - matched).max(), as_loaded=np.abs(logits - as_loaded).max(),
               features=np.abs(feats - hf_feats).max())
  print(f'HF classifier: {diffs}')
  assert diffs['logits'] <= TOL and diffs['features'] <= TOL, diffs
  assert diffs['as_loaded'] <= 1e-3, diffs  # HF's fc_norm eps 1e-5 vs 1e-6: small, not zero
  assert np.abs(logits).max() > 0.1  # not a trivially small output


def test_hf_export_writes_exactly_what_save_pretrained_writes(tiny, tmp_path):
  params = tiny[0]
  kwargs = export.hf_config(CFG)
  assert kwargs['id2label'] == {i: f'class_{i}' for i in range(5)}  # the default names
  reference = transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(**kwargs))
  reference.save_pretrained(tmp_path / 'reference')
  torch_io.save_hf(params, CFG, True, tmp_path / 'ours')
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  def keys(path):
    with safe_open(str(path / 'model.safetensors'), 'np') as f:
      return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
  assert keys(tmp_path / 'ours') == keys(tmp_path / 'reference')
  assert sorted(keys(tmp_path / 'ours')) == sorted(export.hf_names(CFG))
  assert 'classifier.weight' in export.hf_names(CFG)
  assert not any(k.startswith('videomae.layernorm') for k in export.hf_names(CFG))
  assert sorted(os.listdir(tmp_path / 'ours')) == sorted(os.listdir(tmp_path / 'reference'))
  style = 'module' if transformers.__version__ >= '5' else 'checkpoint'
  want = torch_io.hf_expected_shapes(kwargs)  # the installed module's own names
  assert sorted(export.hf_bias_keys(dict.fromkeys(export.hf_names(CFG)), style)) == sorted(want)


def _released_like_hf_classifier(directory, seed=0):
  """An HF classifier that transformers itself wrote (random weights, our names in id2label)."""
  torch.manual_seed(seed)
  hf = transformers.VideoMAEForVideoClassification(
      transformers.VideoMAEConfig(**export.hf_config(CFG, class_names=NAMES))).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():
      is_scale = p.ndim == 1 and name.endswith('weight')  # LayerNorm scales
      p.copy_(torch.randn_like(p) * (0.1 if p.ndim == 1 else p.shape[-1] ** -0.5) + is_scale)
  hf.save_pretrained(directory)
  return hf


def test_import_of_an_hf_classifier_gives_hf_logits_and_carries_the_names(tiny, tmp_path):
  video = tiny[1]
  hf = _released_like_hf_classifier(tmp_path / 'hf')
  want = _hf_logits(hf, video, fc_norm_eps=CFG.layer_norm_eps)
  config = _config()
  torch_io.import_run(tmp_path / 'hf', 'hf', tmp_path / 'run', config)
  with open(tmp_path / 'run' / torch_io.CLASS_NAMES_FILE, encoding='utf-8') as f:
    assert f.read().splitlines() == NAMES
  run = torch_io.load_run(str(tmp_path / 'run'))
  assert run.step == 0 and isinstance(run.model, model_lib.VideoClassifier)
  assert run.model.config == CFG
  _, got = torch_io.jax_classifier_outputs(run.model, video)
  diff = np.abs(got - want).max()
  print(f'HF classifier -> run: logits {diff:.3g}')
  assert diff <= TOL
  # The run exports back to HF with the same names and the same logits.
  back, _ = torch_io.export_run(str(tmp_path / 'run'), str(tmp_path / 'again'), 'hf')
  with open(tmp_path / 'again' / 'config.json', encoding='utf-8') as f:
    assert json.load(f)['id2label'] == {str(i): n for i, n in enumerate(NAMES)}
  assert torch_io.verify_export(back, str(tmp_path / 'again'), 'hf')['logits'] <= TOL


# ---------------------------------------------------------------------------------------------
# The official finetune layout (modeling_finetune.py, use_mean_pooling=True).


class OfficialFinetuneVideoMAE(torch.nn.Module):
  """VisionTransformer of MCG-NJU/VideoMAE modeling_finetune.py, use_mean_pooling=True (no
  layer scale, fixed sin-cos table, `norm` = Identity, fc_norm eps 1e-6)."""

  def __init__(self, cfg):
    super().__init__()
    d, eps = cfg.encoder_dim, cfg.layer_norm_eps
    self.patch_embed = export_support.PatchEmbed(cfg)
    self.pos_embed = export_support.sinusoid(cfg.num_patches, d)  # not a parameter
    self.blocks = torch.nn.ModuleList([export_support.Block(d, cfg.encoder_heads, cfg.mlp_ratio, eps)
                                       for _ in range(cfg.encoder_depth)])
    self.fc_norm = torch.nn.LayerNorm(d, eps=eps)
    self.head = torch.nn.Linear(d, cfg.num_classes)

  def forward(self, x):  # [B, C, T, H, W]
    x = self.patch_embed(x) + self.pos_embed
    for blk in self.blocks:
      x = blk(x)
    return self.head(self.fc_norm(x.mean(1)))


def test_official_finetune_export_matches_independent_module_and_round_trips(tiny, tmp_path):
  params, video, _, logits = tiny
  paths = torch_io.save_videomae(params, CFG, tmp_path, class_names=NAMES)
  assert sorted(os.listdir(tmp_path)) == ['model_config.json', 'videomae_finetune.pth',
                                          'videomae_finetune.safetensors']
  checkpoint = torch.load(paths['pth'], map_location='cpu', weights_only=True)
  assert list(checkpoint) == ['model']  # VideoMAE's --finetune / --eval read 'model' | 'module'
  sd = checkpoint['model']
  assert not any(k.startswith(('encoder.', 'norm.')) for k in sd)
  assert sd['head.weight'].shape == (5, 128) and sd['fc_norm.weight'].shape == (128,)
  official = OfficialFinetuneVideoMAE(CFG).eval()
  official.load_state_dict(sd, strict=True)
  with torch.no_grad():
    got = official(torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3))))
  diff = np.abs(got.numpy() - logits).max()
  print(f'official finetune: logits {diff:.3g}')
  assert diff <= TOL
  for path in paths.values():  # bit-exact back
    _assert_same(export.from_videomae_state_dict(torch_io.load_videomae(path), CFG), params)
  with open(tmp_path / 'model_config.json', encoding='utf-8') as f:
    saved = json.load(f)
  assert saved['num_classes'] == 5 and saved['class_names'] == NAMES
  recorded = export.videomae_recorded_fields(torch_io.load_videomae(paths['pth']))
  assert recorded == {k: getattr(CFG, k) for k in recorded} and 'num_classes' in recorded
  _assert_same(export.from_hf_state_dict(export.to_hf_state_dict(params, CFG), CFG), params)


def test_classifier_runs_export_verify_and_import(tiny, tmp_path):
  params = tiny[0]
  config = _config()
  config.optim.ema_decay = 0.999  # the run keeps an EMA: what it evaluates and exports
  inference.save(tmp_path / 'run', config, params, step=7)
  for fmt, src in (('hf', 'hf'), ('videomae', 'videomae/videomae_finetune.pth')):
    run, removed = torch_io.export_run(str(tmp_path / 'run'), str(tmp_path / fmt), fmt,
                                       class_names=NAMES)
    assert run.step == 7 and removed == []
    diffs = torch_io.verify_export(run, str(tmp_path / fmt), fmt)
    print(f'run -> {fmt}: {diffs}')
    assert diffs['logits'] <= TOL and diffs['features'] <= TOL, diffs
    torch_io.import_run(tmp_path / src, fmt, tmp_path / f'back_{fmt}', config)
    back = inference.load(tmp_path / f'back_{fmt}', ema=True)
    _assert_same(nnx.to_pure_dict(nnx.state(back.model, nnx.Param)), params)
    with open(tmp_path / f'back_{fmt}' / torch_io.CLASS_NAMES_FILE, encoding='utf-8') as f:
      assert f.read().splitlines() == NAMES


# ---------------------------------------------------------------------------------------------
# A finetune's start: backbone_params / read_init_weights from each source style.


def _encoder_only(ae):
  return {'encoder': {k: v for k, v in ae['encoder'].items() if k != 'norm'}}


def test_backbone_params_from_every_style_is_exactly_our_subtree(tiny, ae_params):
  params, ae = tiny[0], ae_params
  pretrain_sd = export.to_videomae_state_dict(ae)
  hf_pretrain = export.to_hf_state_dict(ae, AE_CFG)
  decoder_official = sorted(k for k in pretrain_sd if not k.startswith('encoder.'))
  cases = {
      'videomae_pretrain': (pretrain_sd, _encoder_only(ae)),
      'hf': (hf_pretrain, _encoder_only(ae)),
      'videomae_finetune': (export.to_videomae_state_dict(params), params),
      'hf_classifier': (export.to_hf_state_dict(params, CFG), params),
  }
  for style, (sd, want) in cases.items():
    assert export.detect_style(sd) == style
    for model_cfg in (None, CFG):
      got, dropped = export.backbone_params(sd, style, model_cfg)
      _assert_same(got, want)
      if style == 'videomae_pretrain':
        assert sorted(dropped) == sorted(decoder_official + ['encoder.norm.bias',
                                                             'encoder.norm.weight'])
        assert 'final norm' in dropped['encoder.norm.weight']
        assert 'decoder' in dropped['mask_token']
      elif style == 'hf':
        assert {'videomae.layernorm.weight', 'videomae.layernorm.bias', 'mask_token',
                'encoder_to_decoder.weight'} <= set(dropped)
        assert len(dropped) == len(decoder_official) + 2 + 2 * AE_CFG.decoder_depth  # qkv split
      else:
        assert dropped == {}
  # VideoMAEModel (no prefix, no decoder) and transformers 5.x module bias names.
  model_sd = {k[len('videomae.'):]: v for k, v in hf_pretrain.items() if k.startswith('videomae.')}
  assert export.detect_style(model_sd) == 'hf'
  got, dropped = export.backbone_params(export.hf_bias_keys(model_sd, 'module'), 'hf')
  _assert_same(got, _encoder_only(ae))
  assert sorted(dropped) == ['videomae.layernorm.bias', 'videomae.layernorm.weight']
  fields = export.backbone_fields(export.to_hf_state_dict(params, CFG), 'hf_classifier')
  assert fields == {k: getattr(CFG, k) for k in export.ENCODER_FIELDS + ('num_classes',)}


def test_a_head_for_other_classes_is_dropped_and_named(tiny):
  params = tiny[0]
  other = model_lib.model_config('tiny', num_frames=16, img_size=(64, 64), encoder_depth=2,
                                 num_classes=7)  # frames / size hold no parameters
  for style, sd in (('videomae_finetune', export.to_videomae_state_dict(params)),
                    ('hf_classifier', export.to_hf_state_dict(params, CFG))):
    got, dropped = export.backbone_params(sd, style, other)
    assert sorted(got) == ['encoder', 'fc_norm']
    _assert_same(got['fc_norm'], params['fc_norm'])
    head = 'head' if style == 'videomae_finetune' else 'classifier'
    assert sorted(dropped) == [f'{head}.bias', f'{head}.weight']
    assert 'a head for 5 classes; the config has 7' in dropped[f'{head}.weight']


def test_read_init_weights_detects_every_source(tiny, ae_params, tmp_path):
  params, ae = tiny[0], ae_params
  torch_io.save_hf(ae, AE_CFG, True, tmp_path / 'hf_pretrain')
  torch_io.save_hf(params, CFG, True, tmp_path / 'hf_classifier', class_names=NAMES)
  torch_io.save_videomae(ae, AE_CFG, tmp_path / 'official_pretrain')
  torch_io.save_videomae(params, CFG, tmp_path / 'official_finetune')
  sources = {
      'hf_pretrain': ('hf', _encoder_only(ae)),
      'hf_classifier': ('hf_classifier', params),
      'official_pretrain/videomae_pretrain.pth': ('videomae_pretrain', _encoder_only(ae)),
      'official_pretrain/videomae_pretrain.safetensors': ('videomae_pretrain',
                                                          _encoder_only(ae)),
      'official_finetune/videomae_finetune.pth': ('videomae_finetune', params),
  }
  for src, (style, want) in sources.items():
    got, info = torch_io.read_init_weights(tmp_path / src, CFG)
    _assert_same(got, want)
    assert info['style'] == style and info['source'] == str(tmp_path / src)
    assert info['fields']['encoder_dim'] == 128 and info['fields']['encoder_depth'] == 2
    assert bool(info['dropped']) == (want is not params)
  assert torch_io.read_init_weights(tmp_path / 'hf_classifier')[1]['class_names'] == NAMES


# ---------------------------------------------------------------------------------------------
# Strictness: every bad, missing or unexpected key is named.


def test_wrong_dims_and_missing_or_unexpected_keys_are_named(tiny, ae_params, tmp_path):
  params = tiny[0]
  sd = export.to_videomae_state_dict(params)
  hf_sd = export.to_hf_state_dict(params, CFG)
  with pytest.raises(export.ConfigMismatchError,
                     match='the weights have encoder_dim 128 but the config has 64; the '
                     'weights have encoder_depth 2 but the config has 3'):
    export.backbone_params(sd, 'videomae_finetune', model_lib.model_config(
        'tiny', encoder_dim=64, encoder_heads=2, encoder_depth=3, num_classes=5))
  with pytest.raises(export.ConfigMismatchError, match='encoder_depth 2 but the config has 4'):
    export.backbone_params(export.to_videomae_state_dict(ae_params), 'videomae_pretrain',
                           model_lib.model_config('tiny', num_classes=5))
  cases = (('videomae_finetune', sd, 'blocks.1.attn.v_bias', 'blocks.0.attn.k_bias'),
           ('hf_classifier', hf_sd, 'videomae.encoder.layer.1.attention.attention.v_bias',
            'videomae.encoder.layer.0.attention.attention.key.bias'))
  for style, full, victim, extra in cases:
    strict = (export.from_videomae_state_dict if style == 'videomae_finetune' else
              export.from_hf_state_dict)
    for load in (lambda d, style=style: export.backbone_params(d, style, CFG),
                 lambda d, strict=strict: strict(d, CFG)):
      name, extra_name = re.escape(victim), re.escape(extra)
      with pytest.raises(KeyError, match=rf"missing keys \['{name}'\]"):
        load({k: v for k, v in full.items() if k != victim})
      with pytest.raises(KeyError, match=rf"unexpected keys \['{extra_name}'\]"):
        load({**full, extra: np.zeros(128, np.float32)})
      with pytest.raises(ValueError, match=rf'{name} has shape \(64,\)'):
        load({**full, victim: np.zeros(64, np.float32)})
  with pytest.raises(KeyError, match=r"unexpected keys \['backbone\.cls_token'\]"):
    export.backbone_params({**sd, 'backbone.cls_token': np.zeros(1)}, 'videomae_finetune')
  with pytest.raises(KeyError, match='missing keys .*fc_norm.weight'):  # a pretraining dict
    export.from_videomae_state_dict(export.to_videomae_state_dict(ae_params), CFG)
  with pytest.raises(ValueError, match='not a VideoMAE state dict of a known layout'):
    export.detect_style({'conv1.weight': np.zeros(1)})
  # read_init_weights names the file.
  broken = tmp_path / 'broken.pth'
  torch.save({'model': {k: torch.from_numpy(v) for k, v in sd.items()
                        if k != 'blocks.1.attn.v_bias'}}, broken)
  with pytest.raises(KeyError, match=rf'{tmp_path}/broken\.pth: .*missing keys '
                     r"\['blocks\.1\.attn\.v_bias'\]"):
    torch_io.read_init_weights(broken, CFG)


def test_import_needs_a_config_of_the_same_classes(tiny, ae_params, tmp_path):
  params, ae = tiny[0], ae_params
  torch_io.save_hf(params, CFG, True, tmp_path / 'hf', class_names=NAMES)
  with pytest.raises(export.ConfigMismatchError,
                     match="the weights have num_classes 5 but --config's "
                     'model.num_classes=7 gives 7'):
    torch_io.import_run(tmp_path / 'hf', 'hf', tmp_path / 'a', _config(num_classes=7))
  torch_io.save_videomae(ae, AE_CFG, tmp_path / 'pretrain')
  with pytest.raises(export.ConfigMismatchError,
                     match='the weights have num_classes 0 .* through --config.init'):
    torch_io.import_run(tmp_path / 'pretrain' / 'videomae_pretrain.pth', 'videomae',
                        tmp_path / 'b', _config())
  with pytest.raises(ValueError, match=r'4 class names for model\.num_classes = 5'):
    torch_io.save_hf(params, CFG, True, tmp_path / 'c', class_names=NAMES[:4])
  assert not any((tmp_path / d).exists() for d in 'abc')
