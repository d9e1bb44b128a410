"""Weights between our params and PyTorch layouts: official VideoMAE and HF transformers.

Pure name/layout mapping on NumPy arrays (no torch import; file I/O is in `torch_io`):

    sd = export.to_videomae_state_dict(params)          # MCG-NJU modeling_pretrain.py names
    params = export.from_videomae_state_dict(sd, cfg)   # strict inverse, bit-exact
    hf_sd = export.to_hf_state_dict(params, cfg)        # transformers VideoMAEForPreTraining
    params = export.from_hf_state_dict(hf_sd, cfg)
    hf_cfg = export.hf_config(cfg, norm_pix=True)       # kwargs of transformers.VideoMAEConfig
    cfg = export.fit_config(recorded, config)           # a run config that holds such weights

`params` is the trainer's state["params"] (= `nnx.to_pure_dict(nnx.state(model, nnx.Param))`).
`fit_config` checks the architecture fields that weight files record against a run config's
model section and raises ConfigMismatchError naming every difference. Every import is strict:
a key the model needs and the dict lacks, or one it has and the model does not need, raises
KeyError naming it; a wrong shape raises ValueError naming it.

HF layout (verified against transformers 5.23 and 4.57): the official `attn.qkv.weight` [3D, D] is
split into `attention.attention.{query,key,value}.weight`; `key` has no bias (fixed zero, as
officially); `q_bias` / `v_bias` keep their names: `attention.attention.q_bias` / `v_bias`. These
are the names in HF checkpoint files: what transformers 5.x's own `save_pretrained` writes (its
modules hold them as `query.bias` / `value.bias` and rename on save and load) and what 4.x's
modules hold. Both 4.x and 5.x load them; 4.x does not load `query.bias` / `value.bias` (it leaves
the biases uninitialised: NaN outputs). `to_hf_state_dict` writes the checkpoint names;
`from_hf_state_dict` accepts either (`hf_bias_keys(sd, 'module')` gives 5.x module names, for
`load_state_dict` into an installed 5.x module).

Known HF difference: transformers builds `decoder.norm` as `nn.LayerNorm(D)` with eps 1e-5 that
no config field sets, while VideoMAE and we use `layer_norm_eps` (1e-6). Encoder features are
unaffected; decoder predictions differ slightly (measured by `torch_io.compare_with_hf`). Set
`hf_model.decoder.norm.eps = config.layer_norm_eps` after loading for exact agreement.
"""

from __future__ import annotations

import dataclasses
import math
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
    'attn.q_bias': 'attention.attention.q_bias',
    'attn.v_bias': 'attention.attention.v_bias',
    'attn.proj.weight': 'attention.output.dense.weight',
    'attn.proj.bias': 'attention.output.dense.bias',
    'mlp.fc1.weight': 'intermediate.dense.weight', 'mlp.fc1.bias': 'intermediate.dense.bias',
    'mlp.fc2.weight': 'output.dense.weight', 'mlp.fc2.bias': 'output.dense.bias',
}
_QKV = 'attn.qkv.weight'
_HF_QKV = tuple(f'attention.attention.{p}.weight' for p in ('query', 'key', 'value'))
# HF q/v bias names: checkpoint files (4.x and 5.x `save_pretrained`; 4.x modules) vs 5.x modules.
_HF_BIAS_NAMES = {'checkpoint': ('.attention.attention.q_bias', '.attention.attention.v_bias'),
                  'module': ('.attention.attention.query.bias', '.attention.attention.value.bias')}
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
  """Every key of an HF VideoMAEForPreTraining checkpoint file of `model_cfg` (q/v biases under
  their checkpoint names, as `save_pretrained` writes them)."""
  names = []
  for official in official_shapes(model_cfg):
    hf = _hf_name(official)
    names.extend(hf if isinstance(hf, tuple) else [hf])
  return names


def to_hf_state_dict(params: Params, model_cfg: model_lib.ModelConfig) -> StateDict:
  """Our params -> HF `VideoMAEForPreTraining` checkpoint state dict (float32 NumPy).

  The key names are those transformers' own `save_pretrained` writes (4.x and 5.x alike).
  """
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


def hf_bias_keys(sd: Mapping[str, Any], style: str) -> dict[str, Any]:
  """`sd` with its q/v bias keys in one naming `style` (other keys unchanged).

  'checkpoint': `...attention.attention.q_bias` / `v_bias`, the names in HF checkpoint files
  (written by 4.x and 5.x `save_pretrained`, held by 4.x modules); 'module':
  `...attention.attention.query.bias` / `value.bias`, held by 5.x modules. A bias given under
  both names raises KeyError naming it.
  """
  if style not in _HF_BIAS_NAMES:
    raise ValueError(f'style {style!r}: choose one of {sorted(_HF_BIAS_NAMES)}')
  (other,) = set(_HF_BIAS_NAMES) - {style}
  renames = dict(zip(_HF_BIAS_NAMES[other], _HF_BIAS_NAMES[style]))
  out = {}
  for name, value in sd.items():
    for old, new in renames.items():
      if name.endswith(old):
        name = name[:-len(old)] + new
    if name in out:
      raise KeyError(f'{name} is given under both its HF checkpoint and module names')
    out[name] = value
  return out


def from_hf_state_dict(sd: Mapping[str, Any], model_cfg: model_lib.ModelConfig) -> Params:
  """HF `VideoMAEForPreTraining` state dict -> our params (strict).

  The q/v biases may come under their checkpoint names (`q_bias` / `v_bias`: HF files, 4.x
  modules) or 5.x module names (`query.bias` / `value.bias`); every other key strictly as in
  `hf_names(model_cfg)`.
  """
  sd = hf_bias_keys(sd, 'checkpoint')
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


def videomae_recorded_fields(sd: Mapping[str, Any]) -> dict[str, Any]:
  """The ModelConfig fields an official state dict's shapes record.

  Widths, depths, tubelet, patch, channels and MLP ratio; not the attention heads, img_size or
  num_frames (no parameter depends on them).
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
  return dict(tubelet=tubelet, patch=patch, in_chans=chans, encoder_dim=enc,
              encoder_depth=depth('encoder.blocks'), decoder_dim=dec,
              decoder_depth=depth('decoder.blocks'), mlp_ratio=hidden / enc)


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


ARCH_FIELDS = ('img_size', 'num_frames', 'tubelet', 'patch', 'in_chans', 'encoder_dim',
               'encoder_depth', 'encoder_heads', 'decoder_dim', 'decoder_depth', 'decoder_heads',
               'mlp_ratio', 'layer_norm_eps')


class ConfigMismatchError(ValueError):
  """Weights that a config cannot hold; the message names every field that differs."""


def _same(a, b) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    return math.isclose(a, b, rel_tol=1e-9)
  return tuple(a) == tuple(b) if isinstance(a, (tuple, list)) else a == b


def _show(value) -> str:
  return f'({value[0]}, {value[1]})' if isinstance(value, (tuple, list)) else f'{value!r}'


def _override_hint(wanted: model_lib.ModelConfig, built: model_lib.ModelConfig,
                   section: Mapping[str, Any], what: str) -> tuple[list[str], list[str]]:
  """(`--config.model.*` flags, notes) that make `what`'s model section build `wanted`."""
  fields = preset_config(wanted)
  if len(fields) > 5:  # no preset size has this architecture
    return [], [f'no preset size has this architecture: use a config file whose model section '
                f'sets {", ".join(f"{k}={_show(getattr(wanted, k))}" for k in ARCH_FIELDS)}']
  def norm(key, value):
    if key == 'img_size':
      return (int(value),) * 2 if np.ndim(value) == 0 else tuple(value)
    return value
  flags, absent = [], []
  for key, value in fields.items():
    if key not in section:
      if key != 'size' and norm(key, value) != getattr(built, key):
        absent.append(key)
    elif norm(key, value) != norm(key, section[key]):
      flags.append(f'--config.model.{key}={value}')
  notes = [f'{what}\'s model section lacks {absent}'] if absent else []
  return flags, notes


def fit_config(recorded: Mapping[str, Any], config, norm_pix: bool | None = None,
               what: str = '--config') -> model_lib.ModelConfig:
  """The ModelConfig of `config.model`, if it holds weights whose files record `recorded`.

  `recorded`: the architecture fields the weights' files give (a subset of ARCH_FIELDS, e.g.
  `videomae_recorded_fields(sd)`; the others come from the config); `norm_pix`: the target the
  weights were trained with, if recorded, checked against `config.loss.norm_pix`. Raises
  ConfigMismatchError naming every field that differs, with the `--config.*` overrides that
  would fit (or what a config file must set), and for non-square clips (the trainer crops
  squares).
  """
  recorded = {k: tuple(v) if k == 'img_size' else v for k, v in recorded.items()}
  unknown = sorted(set(recorded) - set(ARCH_FIELDS))
  if unknown:
    raise ValueError(f'not architecture fields: {unknown}')
  size = recorded.get('img_size')
  if size is not None and size[0] != size[1]:
    raise ConfigMismatchError(
        f'img_size {_show(size)}: the trainer needs square clips (its input pipeline crops '
        'squares, as VideoMAE does), so these weights cannot be trained by launch/main.py')
  section = config.model
  built = model_lib.model_config_from(section)
  if built.img_size[0] != built.img_size[1]:
    raise ConfigMismatchError(f'{what}\'s model.img_size {_show(built.img_size)}: the trainer '
                              'needs square clips')
  problems = []
  for field in ARCH_FIELDS:
    if field in recorded and not _same(recorded[field], getattr(built, field)):
      source = (f'model.{field}={_show(section[field])}' if field in section else
                f'model.size={section["size"]!r}')
      problems.append(f'the weights have {field} {_show(recorded[field])} but {what}\'s '
                      f'{source} gives {_show(getattr(built, field))}')
  flags, notes = [], []
  if problems:
    try:
      wanted = dataclasses.replace(built, **recorded)
    except ValueError:
      wanted = None  # e.g. widths that the config's head counts do not divide
    if wanted is not None:
      flags, notes = _override_hint(wanted, built, section, what)
  loss = config.get('loss', {})
  if norm_pix is not None and 'norm_pix' in loss and bool(loss['norm_pix']) != bool(norm_pix):
    problems.append(f'the weights were trained with norm_pix={bool(norm_pix)} but {what}\'s '
                    f'loss.norm_pix={bool(loss["norm_pix"])}')
    flags.append(f'--config.loss.norm_pix={bool(norm_pix)}')
  if problems:
    hint = '; '.join(([f'pass {" ".join(flags)}'] if flags else []) + notes)
    raise ConfigMismatchError('; '.join(problems) + (f' (to import them: {hint})' if hint else ''))
  return built
