"""Export and import of the pretraining variants (mgm_jax/model.py): extra decoder heads
(MotionMAE / MME), MAM2's regressor + motion decoder, and a regressor alone.

Official layout: one state dict, official-style names for the new parts, bit-exact and strict.
HF layout: the HF class that holds what it can (VideoMAEForPreTraining with extra heads only,
else VideoMAEModel) plus mgm_extra.safetensors / mgm_extra.json; transformers must load the HF
files with no missing or unexpected key and compute our encoder features; both files together
give the params back exactly. Shapes are tiny (4 x 32 x 32 clips, 2 x 2 x 2 = 8 tokens, one
encoder and decoder block) so that the whole file runs in well under a minute on CPU.
"""

import json
import os

from flax import nnx
import jax
import numpy as np
import pytest

from mgm_jax import export
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import schema
from mgm_jax import targets
from mgm_jax import torch_io

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
from export_support import random_params as _random_params  # pylint: disable=g-import-not-at-top

TOL = 1e-4
_BASE = dict(num_frames=4, img_size=(32, 32), encoder_depth=1, decoder_depth=1)
VARIANTS = {
    'extra_heads': dict(extra_heads=(('frame_diff', 1536), ('hog', 216))),
    'mam2': dict(extra_heads=(('hog', 216),), motion_heads=(('trajectory', 80),),
                 regressor_depth=1),
    'regressor': dict(regressor_depth=2),
}
HF_CLASS = {'extra_heads': 'VideoMAEForPreTraining', 'mam2': 'VideoMAEModel',
            'regressor': 'VideoMAEModel'}
CLEAN = {'missing_keys': [], 'unexpected_keys': [], 'mismatched_keys': [], 'error_msgs': []}


@pytest.fixture(scope='module', params=list(VARIANTS))
def case(request, tmp_path_factory):
  """(variant name, cfg, params, HF export directory)."""
  cfg = model_lib.model_config('tiny', **_BASE, **VARIANTS[request.param])
  params = _random_params(cfg, seed=5)
  out = tmp_path_factory.mktemp(request.param) / 'hf'
  torch_io.save_hf(params, cfg, True, out)
  return request.param, cfg, params, out


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _escaped(key):
  return key.replace('.', r'\.')


# ---------------------------------------------------------------------------------------------
# Official layout.


def test_official_names_round_trip_and_strictness(case, tmp_path):
  _, cfg, params, _ = case
  sd = export.to_videomae_state_dict(params)
  for head, dim in cfg.extra_heads:
    assert sd[f'decoder.heads.{head}.weight'].shape == (dim, 64)
    assert sd[f'decoder.heads.{head}.bias'].shape == (dim,)
  for head, dim in cfg.motion_heads:
    assert sd[f'motion_decoder.heads.{head}.weight'].shape == (dim, 64)
    assert sd['motion_decoder.blocks.0.attn.qkv.weight'].shape == (192, 64)
    assert sd['motion_decoder.norm.weight'].shape == (64,)
    assert 'motion_decoder.head.weight' not in sd  # no pixel head on the motion decoder
  for i in range(cfg.regressor_depth):
    assert sd['regressor.mask_query'].shape == (1, 1, 128)
    assert sd[f'regressor.blocks.{i}.kv.weight'].shape == (256, 128)  # torch [out, in]
    np.testing.assert_array_equal(sd[f'regressor.blocks.{i}.q.weight'],
                                  params['regressor']['blocks'][i]['q']['kernel'].T)
    for part in ('norm_q', 'norm_kv', 'q', 'kv', 'proj', 'norm2', 'mlp.fc1', 'mlp.fc2'):
      assert {f'regressor.blocks.{i}.{part}.weight', f'regressor.blocks.{i}.{part}.bias'} <= set(sd)
  assert ('mask_token' in sd) == (cfg.regressor_depth == 0)
  assert export.official_shapes(cfg) == {k: v.shape for k, v in sd.items()}
  _assert_same(export.from_videomae_state_dict(sd, cfg), params)

  victim = sorted(k for k in sd if k.startswith(('decoder.heads.', 'regressor.')))[0]
  with pytest.raises(KeyError, match=_escaped(victim)):
    export.from_videomae_state_dict({k: v for k, v in sd.items() if k != victim}, cfg)
  with pytest.raises(KeyError, match=r'unexpected keys \[.regressor\.blocks\.7\.q\.bias.\]'):
    export.from_videomae_state_dict({**sd, 'regressor.blocks.7.q.bias': np.zeros(128)}, cfg)
  plain = model_lib.model_config('tiny', **_BASE)
  with pytest.raises(KeyError, match='unexpected keys'):
    export.from_videomae_state_dict(sd, plain)

  recorded = export.videomae_recorded_fields(sd)  # the keys record the variant
  assert {f: recorded.get(f, getattr(plain, f)) for f in export.VARIANT_FIELDS} == {
      'extra_heads': tuple(sorted(cfg.extra_heads)), 'motion_heads': cfg.motion_heads,
      'regressor_depth': cfg.regressor_depth}
  paths = torch_io.save_videomae(params, cfg, tmp_path)
  for path in paths.values():
    _assert_same(export.from_videomae_state_dict(torch_io.load_videomae(path), cfg), params)


# ---------------------------------------------------------------------------------------------
# HF layout.


def test_hf_files_load_cleanly_into_transformers_and_encode_as_ours(case, tmp_path):
  name, cfg, params, out = case
  assert export.hf_architecture(cfg) == HF_CLASS[name]
  assert sorted(os.listdir(out)) == ['config.json', 'mgm_extra.json', 'mgm_extra.safetensors',
                                     'model.safetensors']
  with open(out / 'mgm_extra.json', encoding='utf-8') as f:
    assert json.load(f) == {'extra_heads': [list(h) for h in cfg.extra_heads],
                            'motion_heads': [list(h) for h in cfg.motion_heads],
                            'regressor_depth': cfg.regressor_depth}
  cls = getattr(transformers, HF_CLASS[name])
  hf, info = cls.from_pretrained(out, output_loading_info=True)
  assert {k: list(v) for k, v in info.items()} == CLEAN
  assert hf.config.architectures == [HF_CLASS[name]]
  hf.eval()

  # The HF file holds exactly what transformers' own save_pretrained writes for that class.
  cls(transformers.VideoMAEConfig(**export.hf_config(cfg, True))).save_pretrained(
      tmp_path / 'reference')
  want, _ = torch_io.load_hf(tmp_path / 'reference')
  got, _ = torch_io.load_hf(out)
  assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}

  model = model_lib.from_params(cfg, params)
  video = torch_io.check_inputs(cfg, seed=2)[0]
  ours = np.asarray(nnx.jit(lambda m, v: m.encode(v))(model, video))
  encoder = hf if name != 'extra_heads' else hf.videomae
  with torch.no_grad():
    theirs = encoder(torch.from_numpy(np.ascontiguousarray(
        video.transpose(0, 1, 4, 2, 3)))).last_hidden_state.numpy()
  assert np.abs(ours - theirs).max() < TOL
  diffs = torch_io.compare_with_hf(model, hf, seed=3)  # visible tokens (+ pixel predictions)
  assert torch_io.checked_difference(diffs) < TOL, diffs
  assert ('predictions_eps_matched' in diffs) == (name == 'extra_heads'), diffs


def test_hf_import_reassembles_the_params_exactly(case):
  _, cfg, params, out = case
  sd, hf_cfg = torch_io.load_hf(out)
  extra, fields = torch_io.load_hf_extra(out)
  assert fields == {f: getattr(cfg, f) for f in export.VARIANT_FIELDS}
  assert sorted(extra) == sorted(export.hf_extra_names(cfg))
  assert not set(extra) & set(sd) and not any(k.startswith('encoder.') for k in extra)
  assert export.model_config_from_hf(hf_cfg, **fields) == cfg
  _assert_same(export.from_hf_state_dict(sd, cfg, extra), params)
  module = export.hf_bias_keys(sd, 'module')  # transformers 5.x module names
  _assert_same(export.from_hf_state_dict(module, cfg, extra), params)
  hf_sd, hf_extra = export.to_hf_state_dicts(params)
  assert sorted(hf_sd) == sorted(export.hf_names(cfg)) and sorted(hf_extra) == sorted(extra)


def test_hf_import_is_strict_about_the_side_files(case, tmp_path):
  _, cfg, _, out = case
  sd, _ = torch_io.load_hf(out)
  extra, _ = torch_io.load_hf_extra(out)
  victim = sorted(extra)[0]
  with pytest.raises(KeyError, match=rf'mgm_extra\.safetensors.*missing keys.*{_escaped(victim)}'):
    export.from_hf_state_dict(sd, cfg, {k: v for k, v in extra.items() if k != victim})
  with pytest.raises(KeyError, match=r'mgm_extra\.safetensors.*unexpected keys '
                     r'\[.decoder\.heads\.flow\.weight.\]'):
    export.from_hf_state_dict(sd, cfg, {**extra, 'decoder.heads.flow.weight': np.zeros((2, 64))})
  with pytest.raises(KeyError, match=r'mgm_extra\.safetensors.*missing keys'):
    export.from_hf_state_dict(sd, cfg)  # the side file not given
  with pytest.raises(ValueError, match=_escaped(victim)):
    export.from_hf_state_dict(sd, cfg, {**extra, victim: np.zeros((3, 3), np.float32)})

  broken = tmp_path / 'broken'
  broken.mkdir()
  for f in ('config.json', 'model.safetensors', 'mgm_extra.json'):
    (broken / f).write_bytes((out / f).read_bytes())
  with pytest.raises(FileNotFoundError, match=r'no mgm_extra\.safetensors beside '
                     r'mgm_extra\.json'):
    torch_io.load_hf_extra(broken)
  with open(broken / 'mgm_extra.json', 'w', encoding='utf-8') as f:
    json.dump({**export.hf_extra_info(cfg), 'flow_heads': []}, f)
  (broken / 'mgm_extra.safetensors').write_bytes((out / 'mgm_extra.safetensors').read_bytes())
  with pytest.raises(KeyError, match=r"unexpected keys \['flow_heads'\]"):
    torch_io.load_hf_extra(broken)


# ---------------------------------------------------------------------------------------------
# A finetune starts from a variant's export: the encoder, every pretraining-only part dropped.


def test_backbone_params_of_a_variant_drop_its_pretraining_parts(case):
  _, cfg, params, out = case
  classifier = model_lib.model_config('tiny', **_BASE, num_classes=3)
  sd = export.to_videomae_state_dict(params)
  got, dropped = export.backbone_params(sd, 'videomae_pretrain', classifier)
  want = {'encoder': {k: params['encoder'][k] for k in ('patch_embed', 'blocks')}}
  _assert_same(got, want)
  assert sorted(dropped) == sorted(k for k in sd if not k.startswith(('encoder.patch_embed.',
                                                                      'encoder.blocks.')))
  reasons = {k.split('.')[0] + ('.heads' if '.heads.' in k else ''): r
             for k, r in dropped.items()}
  if cfg.extra_heads:
    assert 'further prediction head' in reasons['decoder.heads']
  if cfg.motion_heads:
    assert "MAM2's motion decoder" in reasons['motion_decoder']
    assert "MAM2's motion decoder" in reasons['motion_decoder.heads']
  if cfg.regressor_depth:
    assert "MAM2's regressor" in reasons['regressor']
  assert 'pretraining decoder' in reasons['decoder']

  got, info = torch_io.read_init_weights(out, classifier)  # the HF export's directory
  _assert_same(got, want)
  assert info['style'] == 'hf'
  side = sorted(k for k in info['dropped'] if k.startswith('mgm_extra.safetensors:'))
  assert side == sorted(f'mgm_extra.safetensors:{k}' for k in export.hf_extra_names(cfg))


# ---------------------------------------------------------------------------------------------
# A MAM2 run -> HF (checked) -> a run again, bit-exact; a config without its parts is refused.


def _mam2_config():
  config = schema.load('configs/demo.py', '--config.model.regressor_depth=1',
                       '--config.model.motion_decoder=True', '--config.loss.frame_diff=1.0',
                       '--config.loss.hog=0.5')
  config.model.img_size, config.model.encoder_depth, config.model.decoder_depth = 32, 1, 1
  return config


def test_mam2_run_exports_verifies_and_imports_back(tmp_path):
  config = _mam2_config()
  params = _random_params(targets.model_config(config), seed=6)
  inference.save(tmp_path / 'run', config, params, step=2)
  run, _ = torch_io.export_run(str(tmp_path / 'run'), str(tmp_path / 'hf'), 'hf')
  assert run.model.config.motion_heads and run.model.config.regressor_depth == 1
  diffs = torch_io.verify_export(run, str(tmp_path / 'hf'), 'hf')
  assert set(diffs) == {'features', 'features_all', 'weights'}, diffs
  assert diffs['weights'] == 0 and torch_io.checked_difference(diffs) < TOL, diffs

  torch_io.import_run(tmp_path / 'hf', 'hf', tmp_path / 'back', config)
  back = inference.load(tmp_path / 'back')
  _assert_same(nnx.to_pure_dict(nnx.state(back.model, nnx.Param)), params)

  plain = schema.load('configs/demo.py', '--config.loss.frame_diff=1.0', '--config.loss.hog=0.5')
  plain.model.img_size, plain.model.encoder_depth, plain.model.decoder_depth = 32, 1, 1
  with pytest.raises(export.ConfigMismatchError) as error:
    torch_io.read_weights(str(tmp_path / 'hf'), 'hf', plain)
  message = str(error.value)
  for part in ('the weights have regressor_depth 1 but', 'the weights have motion_heads '
               "(frame_diff: 1536) but --config's loss weights and model.motion_decoder "
               '(targets.model_config) give ()', 'pass --config.model.regressor_depth=1 '
               '--config.model.motion_decoder=True;'):
    assert part in message, message
  assert 'no preset size' not in message  # only the variant differs

  os.remove(tmp_path / 'hf' / 'mgm_extra.safetensors')
  os.remove(tmp_path / 'hf' / 'mgm_extra.json')
  with pytest.raises(FileNotFoundError, match=r'VideoMAEModel holds only the encoder and there '
                     r'is no mgm_extra\.safetensors'):
    torch_io.read_weights(str(tmp_path / 'hf'), 'hf', config)
