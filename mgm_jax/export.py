"""Weights between our params and PyTorch layouts: official VideoMAE and HF transformers.

Pure name/layout mapping on NumPy arrays (no torch import; file I/O is in `torch_io`):

    sd = export.to_videomae_state_dict(params)          # MCG-NJU modeling_pretrain.py names
    params = export.from_videomae_state_dict(sd, cfg)   # strict inverse, bit-exact
    hf_sd = export.to_hf_state_dict(params, cfg)        # transformers VideoMAEForPreTraining
    params = export.from_hf_state_dict(hf_sd, cfg)
    hf_cfg = export.hf_config(cfg, norm_pix=True)       # kwargs of transformers.VideoMAEConfig

`params` is the trainer's state["params"] (= `nnx.to_pure_dict(nnx.state(model, nnx.Param))`).
Every import is strict: a key the model needs and the dict lacks, or one it has and the model
does not need, raises KeyError naming it; a wrong shape raises ValueError naming it.

HF layout (verified against transformers 5.23, `VideoMAEForPreTraining().state_dict()`): the
official `attn.qkv.weight` [3D, D] is split into `attention.attention.{query,key,value}.weight`;
`q_bias` / `v_bias` become `query.bias` / `value.bias` and `key` has no bias (fixed zero, as
officially). HF 4.x names (`attention.attention.q_bias` / `v_bias`) are accepted on import, as
transformers 5.x's own loader renames them.

Known HF difference: transformers builds `decoder.norm` as `nn.LayerNorm(D)` with eps 1e-5 that
no config field sets, while VideoMAE and we use `layer_norm_eps` (1e-6). Encoder features are
unaffected; decoder predictions differ slightly (measured by `torch_io.compare_with_hf`). Set
`hf_model.decoder.norm.eps = config.layer_norm_eps` after loading for exact agreement.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from flax import nnx
import jax
import numpy as np

from mgm_jax import model as model_lib

Params = dict[str, Any]
StateDict = dict[str, np.ndarray]

# HF decoder norm: `nn.LayerNorm(decoder_hidden_size)`, PyTorch's default eps.
HF_DECODER_NORM_EPS = 1e-5

_HF_PREFIXES = (  # official prefix -> HF prefix (regex, replacement), applied in order
    (r'^encoder\.patch_embed\.proj\.', 'videomae.embeddings.patch_embeddings.projection.'),
    (r'^encoder\.blocks\.(\d+)\.', r'videomae.encoder.layer.\1.'),
    (r'^decoder\.blocks\.(\d+)\.', r'decoder.decoder_layers.\1.'),
    (r'^encoder\.norm\.', 'videomae.layernorm.'),
)
_HF_BLOCK = {  # official name inside a block -> HF name inside a layer
    'norm1.weight': 'layernorm_before.weight', 'norm1.bias': 'layernorm_before.bias',
    'norm2.weight': 'layernorm_after.weight', 'norm2.bias': 'layernorm_after.bias',
    'attn.q_bias': 'attention.attention.query.bias',
    'attn.v_bias': 'attention.attention.value.bias',
    'attn.proj.weight': 'attention.output.dense.weight',
    'attn.proj.bias': 'attention.output.dense.bias',
    'mlp.fc1.weight': 'intermediate.dense.weight', 'mlp.fc1.bias': 'intermediate.dense.bias',
    'mlp.fc2.weight': 'output.dense.weight', 'mlp.fc2.bias': 'output.dense.bias',
}
_QKV = 'attn.qkv.weight'
_HF_QKV = tuple(f'attention.attention.{p}.weight' for p in ('query', 'key', 'value'))
_HF_LEGACY = ((r'\.attention\.attention\.q_bias$', '.attention.attention.query.bias'),
              (r'\.attention\.attention\.v_bias$', '.attention.attention.value.bias'))
_LAYER = re.compile(r'^((?:videomae\.encoder\.layer|decoder\.decoder_layers)\.\d+\.)(.*)$')


def as_numpy(value) -> np.ndarray:
  """A float32 NumPy copy of an array or a (CPU, any dtype) torch tensor."""
  if hasattr(value, 'detach'):  # torch.Tensor, without importing torch
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def _official_name(path: tuple[Any, ...]) -> tuple[str, str]:
  """Our param path -> (official state-dict name, layout kind: 'conv' | 'linear' | 'same')."""
  *parents, leaf = (str(p) for p in path)
  base = '.'.join(parents)
  if leaf == 'kernel':
    kind = 'conv' if parents[-2:] == ['patch_embed', 'proj'] else 'linear'
    return f'{base}.weight', kind
  if leaf == 'scale':
    return f'{base}.weight', 'same'
  return '.'.join(parents + [leaf]), 'same'


def _to_torch_layout(value: np.ndarray, kind: str) -> np.ndarray:
  if kind == 'linear':  # [in, out] -> [out, in]
    value = value.T
  elif kind == 'conv':  # [kt, kh, kw, in, out] -> [out, in, kt, kh, kw]
    value = value.transpose(4, 3, 0, 1, 2)
  return np.ascontiguousarray(value, np.float32)


def _from_torch_layout(value: np.ndarray, kind: str) -> np.ndarray:
  if kind == 'linear':
    value = value.T
  elif kind == 'conv':
    value = value.transpose(2, 3, 4, 1, 0)
  return np.ascontiguousarray(value, np.float32)


def _torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  if kind == 'linear':
    return tuple(shape[::-1])
  if kind == 'conv':
    return tuple(shape[i] for i in (4, 3, 0, 1, 2))
  return tuple(shape)


def abstract_params(model_cfg: model_lib.ModelConfig) -> Params:
  """ShapeDtypeStructs of the params of `model_cfg`, in the trainer's pure-dict layout."""
  model = nnx.eval_shape(lambda: model_lib.MaskedAutoencoder(model_cfg, rngs=nnx.Rngs(0)))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _path_keys(path) -> tuple[Any, ...]:
  return tuple(getattr(k, 'key', getattr(k, 'idx', k)) for k in path)


def _check_keys(got, expected, what: str) -> None:
  """Raises KeyError naming every missing and unexpected key."""
  missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
  if missing or unexpected:
    raise KeyError(f'{what}: missing keys {missing}; unexpected keys {unexpected}')


def _check_shape(name: str, got: tuple[int, ...], want: tuple[int, ...], what: str) -> None:
  if tuple(got) != tuple(want):
    raise ValueError(f'{what}: {name} has shape {tuple(got)}, expected {tuple(want)}')


def official_shapes(model_cfg: model_lib.ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every official state-dict name of `model_cfg` with its PyTorch shape."""
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params(model_cfg))[0]:
    name, kind = _official_name(_path_keys(path))
    shapes[name] = _torch_shape(leaf.shape, kind)
  return shapes


def to_videomae_state_dict(params: Params) -> StateDict:
  """Our params -> official VideoMAE pretraining state dict (float32 NumPy, PyTorch layouts)."""
  sd = {}
  for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
    name, kind = _official_name(_path_keys(path))
    if name in sd:
      raise ValueError(f'two parameters map to {name}')
    sd[name] = _to_torch_layout(as_numpy(value), kind)
  return sd


def from_videomae_state_dict(sd: Mapping[str, Any], model_cfg: model_lib.ModelConfig) -> Params:
  """Official VideoMAE pretraining state dict -> our params (strict; float32 NumPy leaves)."""
  abstract = abstract_params(model_cfg)
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  names = [_official_name(_path_keys(path)) for path, _ in flat]
  _check_keys(sd, [n for n, _ in names], 'VideoMAE state dict')
  leaves = []
  for (_, leaf), (name, kind) in zip(flat, names):
    value = as_numpy(sd[name])
    _check_shape(name, value.shape, _torch_shape(leaf.shape, kind), 'VideoMAE state dict')
    leaves.append(_from_torch_layout(value, kind))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _hf_name(official: str) -> str | tuple[str, ...]:
  """Official name -> HF name (a 3-tuple for the qkv weight, which HF splits)."""
  name = official
  for pattern, repl in _HF_PREFIXES:
    name = re.sub(pattern, repl, name)
  layer = _LAYER.match(name)
  if layer:
    prefix, rest = layer.groups()
    if rest == _QKV:
      return tuple(prefix + part for part in _HF_QKV)
    name = prefix + _HF_BLOCK[rest]
  return name


def hf_names(model_cfg: model_lib.ModelConfig) -> list[str]:
  """Every key of transformers' VideoMAEForPreTraining state dict for `model_cfg`."""
  names = []
  for official in official_shapes(model_cfg):
    hf = _hf_name(official)
    names.extend(hf if isinstance(hf, tuple) else [hf])
  return names


def to_hf_state_dict(params: Params, model_cfg: model_lib.ModelConfig) -> StateDict:
  """Our params -> HF `VideoMAEForPreTraining` state dict (float32 NumPy)."""
  del model_cfg  # the layout follows from the params; kept for a symmetric API
  hf = {}
  for official, value in to_videomae_state_dict(params).items():
    name = _hf_name(official)
    if isinstance(name, tuple):
      for part, chunk in zip(name, np.split(value, 3, axis=0)):
        hf[part] = np.ascontiguousarray(chunk)
    else:
      hf[name] = value
  return hf


def rename_legacy_hf_keys(sd: Mapping[str, Any]) -> dict[str, Any]:
  """HF 4.x `attention.attention.q_bias`/`v_bias` -> 5.x `query.bias`/`value.bias`."""
  out = {}
  for name, value in sd.items():
    for pattern, repl in _HF_LEGACY:
      name = re.sub(pattern, repl, name)
    if name in out:
      raise KeyError(f'{name} given under both its HF 4.x and 5.x names')
    out[name] = value
  return out


def from_hf_state_dict(sd: Mapping[str, Any], model_cfg: model_lib.ModelConfig) -> Params:
  """HF `VideoMAEForPreTraining` state dict (5.x or 4.x names) -> our params (strict)."""
  sd = rename_legacy_hf_keys(sd)
  _check_keys(sd, hf_names(model_cfg), 'HF VideoMAEForPreTraining state dict')
  official = {}
  for name, shape in official_shapes(model_cfg).items():
    hf = _hf_name(name)
    if isinstance(hf, tuple):
      parts = [as_numpy(sd[p]) for p in hf]
      for part, value in zip(hf, parts):
        _check_shape(part, value.shape, (shape[0] // 3, shape[1]), 'HF state dict')
      official[name] = np.concatenate(parts, axis=0)
    else:
      official[name] = as_numpy(sd[hf])
      _check_shape(hf, official[name].shape, shape, 'HF state dict')
  return from_videomae_state_dict(official, model_cfg)


def hf_config(model_cfg: model_lib.ModelConfig, norm_pix: bool) -> dict[str, Any]:
  """Keyword arguments of `transformers.VideoMAEConfig` that compute what `model_cfg` does.

  All but the decoder's final LayerNorm eps, which HF fixes at 1e-5 (see the module docstring).
  """
  c = model_cfg
  height, width = c.img_size
  return dict(
      architectures=['VideoMAEForPreTraining'],
      image_size=height if height == width else [height, width],
      patch_size=c.patch, num_channels=c.in_chans, num_frames=c.num_frames,
      tubelet_size=c.tubelet, hidden_size=c.encoder_dim, num_hidden_layers=c.encoder_depth,
      num_attention_heads=c.encoder_heads, intermediate_size=int(c.encoder_dim * c.mlp_ratio),
      hidden_act='gelu', hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      layer_norm_eps=c.layer_norm_eps, qv_bias=True, use_mean_pooling=False,
      decoder_hidden_size=c.decoder_dim, decoder_num_hidden_layers=c.decoder_depth,
      decoder_num_attention_heads=c.decoder_heads,
      decoder_intermediate_size=int(c.decoder_dim * c.mlp_ratio),
      norm_pix_loss=bool(norm_pix))


def model_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> model_lib.ModelConfig:
  """An HF VideoMAE config (dict) -> ModelConfig; raises if ours cannot compute the same."""
  def need(field, ok, what):
    if not ok:
      raise ValueError(f'HF config {field}={hf.get(field)!r}: {what} is not supported')
  need('qv_bias', hf.get('qv_bias', hf.get('qkv_bias', True)), 'attention without q/v biases')
  need('use_mean_pooling', not hf.get('use_mean_pooling', True),
       'a pretraining model without the encoder norm (use_mean_pooling=True)')
  need('hidden_act', hf.get('hidden_act', 'gelu') == 'gelu', 'an activation other than gelu')
  patch = hf.get('patch_size', 16)
  need('patch_size', np.ndim(patch) == 0 or len(set(patch)) == 1, 'a non-square patch')
  ratio = hf['intermediate_size'] / hf['hidden_size']
  need('decoder_intermediate_size',
       hf['decoder_intermediate_size'] == int(hf['decoder_hidden_size'] * ratio),
       'a decoder MLP ratio other than the encoder\'s')
  size = hf.get('image_size', 224)
  fields = dict(
      img_size=(size, size) if np.ndim(size) == 0 else tuple(size),
      num_frames=hf.get('num_frames', 16), tubelet=hf.get('tubelet_size', 2),
      patch=int(np.ravel(patch)[0]), in_chans=hf.get('num_channels', 3),
      encoder_dim=hf['hidden_size'], encoder_depth=hf['num_hidden_layers'],
      encoder_heads=hf['num_attention_heads'], decoder_dim=hf['decoder_hidden_size'],
      decoder_depth=hf['decoder_num_hidden_layers'],
      decoder_heads=hf['decoder_num_attention_heads'], mlp_ratio=ratio,
      layer_norm_eps=hf.get('layer_norm_eps', 1e-12))
  fields.update(overrides)
  return model_lib.ModelConfig(**fields)


# Attention heads of the preset sizes by width (the state dict does not record them).
_HEADS = {128: 4, 64: 2, 384: 6, 768: 12, 1024: 16, 1280: 16, 192: 3, 512: 8, 640: 8}


def model_config_from_videomae(sd: Mapping[str, Any], **overrides: Any) -> model_lib.ModelConfig:
  """Infers a ModelConfig from an official state dict's shapes.

  Widths, depths, tubelet, patch, channels and MLP ratio come from the shapes; attention heads
  from the preset of that width unless given (`encoder_heads=`, `decoder_heads=`); img_size and
  num_frames (not recorded in the weights) default to 224 and 16.
  """
  def depth(prefix):
    found = {int(m.group(1)) for k in sd for m in [re.match(rf'^{prefix}\.(\d+)\.', k)] if m}
    return max(found) + 1 if found else 0
  for key in ('encoder.patch_embed.proj.weight', 'encoder_to_decoder.weight',
              'encoder.blocks.0.mlp.fc1.weight'):
    if key not in sd:
      raise KeyError(f'VideoMAE state dict: missing key {key}')
  enc, chans, tubelet, patch, _ = tuple(sd['encoder.patch_embed.proj.weight'].shape)
  dec = tuple(sd['encoder_to_decoder.weight'].shape)[0]
  hidden = tuple(sd['encoder.blocks.0.mlp.fc1.weight'].shape)[0]
  fields = dict(img_size=(224, 224), num_frames=16, tubelet=tubelet, patch=patch,
                in_chans=chans, encoder_dim=enc, encoder_depth=depth('encoder.blocks'),
                encoder_heads=_HEADS.get(enc), decoder_dim=dec,
                decoder_depth=depth('decoder.blocks'), decoder_heads=_HEADS.get(dec),
                mlp_ratio=hidden / enc)
  fields.update(overrides)
  for part in ('encoder', 'decoder'):
    if fields[f'{part}_heads'] is None:
      raise ValueError(f'{part} width {fields[f"{part}_dim"]} is no preset size: pass '
                       f'{part}_heads')
  return model_lib.ModelConfig(**fields)


def preset_config(model_cfg: model_lib.ModelConfig) -> dict[str, Any]:
  """`config.model` fields for `model_cfg`: the preset `size` whose architecture it has, if any.

  Returns {'size': NAME, img_size, num_frames, tubelet, patch} when a preset matches (what the
  trainer's configs can express), else {'size': 'B', every architecture field}.
  """
  arch = ('in_chans', 'encoder_dim', 'encoder_depth', 'encoder_heads', 'decoder_dim',
          'decoder_depth', 'decoder_heads', 'mlp_ratio', 'layer_norm_eps')
  height, width = model_cfg.img_size
  base = dict(img_size=height if height == width else [height, width],
              num_frames=model_cfg.num_frames, tubelet=model_cfg.tubelet, patch=model_cfg.patch)
  for size in model_lib.SIZES:
    preset = model_lib.model_config(size)
    if all(getattr(preset, f) == getattr(model_cfg, f) for f in arch):
      return dict(size=size, **base)
  fields = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)
            if f.name in arch}
  return dict(size='B', **base, **fields)
