"""Weights between our params and PyTorch layouts: official VideoMAE and HF transformers.

Pure name/layout mapping on NumPy arrays (no torch import; file I/O is in `torch_io`):

    sd = export.to_videomae_state_dict(params)          # MCG-NJU VideoMAE names
    params = export.from_videomae_state_dict(sd, cfg)   # strict inverse, bit-exact
    hf_sd = export.to_hf_state_dict(params, cfg)        # transformers names
    params = export.from_hf_state_dict(hf_sd, cfg)
    hf_sd, extra = export.to_hf_state_dicts(params)     # + what HF has no module for (variants)
    params = export.from_hf_state_dict(hf_sd, cfg, extra)
    hf_cfg = export.hf_config(cfg, norm_pix=True)       # kwargs of transformers.VideoMAEConfig
    cfg = export.fit_config(recorded, config)           # a run config that holds such weights
    enc, dropped = export.backbone_params(sd, style)    # a finetune's initial encoder (+ head)

`params` is the trainer's state["params"] (= `nnx.to_pure_dict(nnx.state(model, nnx.Param))`).
Two models, one mapping. The model a config describes (`model.make_model`) decides the layout:

  autoencoder (num_classes = 0)  official `modeling_pretrain.py`: `encoder.patch_embed`,
                                 `encoder.blocks.i`, `encoder.norm`, decoder...; HF
                                 `VideoMAEForPreTraining`.
  classifier (num_classes > 0)   official `modeling_finetune.py` (use_mean_pooling=True):
                                 `patch_embed`, `blocks.i`, `fc_norm`, `head` (no `norm`); HF
                                 `VideoMAEForVideoClassification` (use_mean_pooling=True):
                                 `videomae.embeddings`, `videomae.encoder.layer.i`, `fc_norm`,
                                 `classifier` (no `videomae.layernorm`).

Pretraining variants (`model.ModelConfig.extra_heads`, `motion_heads`, `regressor_depth`) keep
the same rule, param path -> dotted name, Linear weights transposed to [out, in]:

  decoder/heads/<name>/{kernel,bias}            decoder.heads.<name>.{weight,bias}
  motion_decoder/blocks/i/..., norm             motion_decoder.blocks.i..., motion_decoder.norm
  motion_decoder/heads/<name>/{kernel,bias}     motion_decoder.heads.<name>.{weight,bias}
  regressor/mask_query                          regressor.mask_query
  regressor/norm/{scale,bias}                   regressor.norm.{weight,bias}
  regressor/blocks/i/{norm_q,norm_kv,norm2}     regressor.blocks.i.{norm_q,norm_kv,norm2}.*
  regressor/blocks/i/{q,kv,proj,mlp/fc1,fc2}    regressor.blocks.i.{q,kv,proj,mlp.fc1,mlp.fc2}.*

(with a regressor there is no `mask_token`). Official VideoMAE's `modeling_pretrain.py` has no
module for these: its `encoder.*` keys are the official ones, and what a finetune reads
(`run_class_finetuning.py --finetune` loads only the encoder; `backbone_params` likewise drops
these parts, each with its reason). HF has no module for them either; an HF export is:

  plain autoencoder         `VideoMAEForPreTraining` (pixel head = `decoder.head`)
  extra heads only          `VideoMAEForPreTraining` + HF_EXTRA_WEIGHTS (`decoder.heads.*`)
  regressor / motion dec.   `VideoMAEModel` (the encoder and its final norm, HF's `layernorm`;
                            no prefix) + HF_EXTRA_WEIGHTS (`encoder_to_decoder`, `mask_token` if
                            any, `decoder.*`, `motion_decoder.*`, `regressor.*`)

HF_EXTRA_WEIGHTS (`mgm_extra.safetensors`) holds those parts in the official-style names above;
HF_EXTRA_CONFIG (`mgm_extra.json`) the VARIANT_FIELDS ({"extra_heads": [[name, dim], ...],
"motion_heads": ..., "regressor_depth": n}). `hf_architecture(cfg)` names the class,
`hf_extra_names(cfg)` the side file's keys; `from_hf_state_dict` checks both dicts strictly.

The encoder's names are the same in both, under two prefixes (official: `encoder.` or none; HF:
`videomae.`, none in `VideoMAEModel`). `to_*` functions read the kind from the params (a
top-level `head` is the classifier's; a `regressor` or `motion_decoder` gives `VideoMAEModel`),
`from_*` ones from `model_cfg` (`num_classes`, `hf_architecture`).

`fit_config` checks the architecture fields that weight files record against a run config's
model section and raises ConfigMismatchError naming every difference. Every import is strict:
a key the model needs and the dict lacks, or one it has and the model does not need, raises
KeyError naming it; a wrong shape raises ValueError naming it. `backbone_params` (what a
finetune starts from) drops the parts of a source that a classifier has no place for (the
pretraining decoder, the encoder's final norm) on purpose and returns their names with the
reason; any other key it does not know raises.

HF layout (verified against transformers 5.23 and 4.57): the official `attn.qkv.weight` [3D, D] is
split into `attention.attention.{query,key,value}.weight`; `key` has no bias (fixed zero, as
officially); `q_bias` / `v_bias` keep their names: `attention.attention.q_bias` / `v_bias`. These
are the names in HF checkpoint files: what transformers 5.x's own `save_pretrained` writes (its
modules hold them as `query.bias` / `value.bias` and rename on save and load) and what 4.x's
modules hold. Both 4.x and 5.x load them; 4.x does not load `query.bias` / `value.bias` (it leaves
the biases uninitialised: NaN outputs). `to_hf_state_dict` writes the checkpoint names;
`from_hf_state_dict` accepts either (`hf_bias_keys(sd, 'module')` gives 5.x module names, for
`load_state_dict` into an installed 5.x module). `VideoMAEModel`'s names (`embeddings.`,
`encoder.layer.i.`, `layernorm.` with use_mean_pooling=False) were checked against 5.23's
`save_pretrained`.

Known HF differences: transformers builds `decoder.norm` (pretraining) and `fc_norm`
(classification) as `nn.LayerNorm(D)` with eps 1e-5 that no config field sets, while VideoMAE
and we use `layer_norm_eps` (1e-6). Encoder features are unaffected; decoder predictions and
logits differ slightly (measured by `torch_io.compare_with_hf`). Set
`hf_model.decoder.norm.eps` / `hf_model.fc_norm.eps = config.layer_norm_eps` after loading for
exact agreement.
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
from mgm_jax import targets as targets_lib

Params = dict[str, Any]
StateDict = dict[str, np.ndarray]

# HF decoder norm (pretraining) and fc_norm (classification): `nn.LayerNorm(hidden)`, PyTorch's
# default eps.
HF_DECODER_NORM_EPS = 1e-5
HF_FC_NORM_EPS = 1e-5
HF_ARCHITECTURES = {False: 'VideoMAEForPreTraining', True: 'VideoMAEForVideoClassification'}
# The HF class of an autoencoder with MAM2's regressor or motion decoder: the encoder only.
HF_ENCODER_ARCHITECTURE = 'VideoMAEModel'
# Beside an HF export: what its class has no place for (official-style names) and which variant.
HF_EXTRA_WEIGHTS = 'mgm_extra.safetensors'
HF_EXTRA_CONFIG = 'mgm_extra.json'
_ENCODER_ONLY_PARTS = ('regressor.', 'motion_decoder.')  # official prefixes -> VideoMAEModel
# The ModelConfig fields of the pretraining variants (model.py): HF_EXTRA_CONFIG's keys.
VARIANT_FIELDS = ('extra_heads', 'motion_heads', 'regressor_depth')
_HEAD_FIELDS = ('extra_heads', 'motion_heads')

# Official name -> HF name: (regex, replacement), the first that matches. One encoder mapping,
# under the encoder's official prefix of each model (`encoder.` pretraining, none finetuning).
_EMBED = 'videomae.embeddings.patch_embeddings.projection.'


def _encoder_rules(prefix: str) -> tuple[tuple[str, str], ...]:
  prefix = re.escape(prefix)
  return ((rf'^{prefix}patch_embed\.proj\.', _EMBED),
          (rf'^{prefix}blocks\.(\d+)\.', r'videomae.encoder.layer.\1.'))


_HF_PREFIXES = {  # classifier? -> rules
    False: _encoder_rules('encoder.') + (
        (r'^encoder\.norm\.', 'videomae.layernorm.'),
        (r'^decoder\.blocks\.(\d+)\.', r'decoder.decoder_layers.\1.')),
    True: _encoder_rules('') + ((r'^head\.', 'classifier.'),),  # fc_norm keeps its name
}
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


def _joint_only(model_cfg: model_lib.ModelConfig) -> None:
  """Raises ValueError for a divided-attention model (no PyTorch layout holds it)."""
  if model_cfg.attention != 'joint':
    raise ValueError(_JAX_ONLY.format(model_cfg.attention))


def _joint_only_params(params: Mapping[str, Any]) -> None:
  """`_joint_only` for params: divided attention's blocks hold `temporal_attn`."""
  blocks = params.get('encoder', {}).get('blocks', {})
  if any('temporal_attn' in block for block in blocks.values()):
    raise ValueError(_JAX_ONLY.format('divided'))


_JAX_ONLY = ("model.attention={!r} is JAX-only: official VideoMAE and HF VideoMAE have no "
             "temporal attention modules, and TimeSformer's layouts (2-D patches, a cls token) "
             "do not fit the tubelet model; export or import a model.attention='joint' model")


def is_classifier(params: Mapping[str, Any]) -> bool:
  """Whether `params` (our pure-dict layout) are the classifier's (a top-level `head`)."""
  return 'head' in params


def _official_name(path: tuple[Any, ...], classifier: bool) -> tuple[str, str]:
  """Our param path -> (official state-dict name, layout kind: 'conv' | 'linear' | 'same').

  The classifier's `encoder/...` has no prefix officially (`modeling_finetune.py`).
  """
  *parents, leaf = (str(p) for p in path)
  if classifier and parents[:1] == ['encoder']:
    parents = parents[1:]
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
  """ShapeDtypeStructs of the params of `model_cfg`'s model (`make_model`: the classifier if
  num_classes > 0, else the autoencoder), in the trainer's pure-dict layout."""
  model = nnx.eval_shape(lambda: model_lib.make_model(model_cfg, nnx.Rngs(0)))
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


def _official_shapes(abstract: Params, classifier: bool) -> dict[str, tuple[int, ...]]:
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    name, kind = _official_name(_path_keys(path), classifier)
    shapes[name] = _torch_shape(leaf.shape, kind)
  return shapes


def official_shapes(model_cfg: model_lib.ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every official state-dict name of `model_cfg`'s model with its PyTorch shape."""
  _joint_only(model_cfg)
  return _official_shapes(abstract_params(model_cfg), model_cfg.num_classes > 0)


def _what(classifier: bool) -> str:
  return 'VideoMAE finetune state dict' if classifier else 'VideoMAE state dict'


def _hf_what(architecture: str) -> str:
  return f'HF {architecture} state dict'


def to_videomae_state_dict(params: Params) -> StateDict:
  """Our params -> official VideoMAE state dict (float32 NumPy, PyTorch layouts).

  Autoencoder params give `modeling_pretrain.py`'s names, classifier params (a top-level
  `head`) `modeling_finetune.py`'s.
  """
  _joint_only_params(params)
  classifier = is_classifier(params)
  sd = {}
  for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
    name, kind = _official_name(_path_keys(path), classifier)
    if name in sd:
      raise ValueError(f'two parameters map to {name}')
    sd[name] = _to_torch_layout(as_numpy(value), kind)
  return sd


def _from_official(sd: Mapping[str, Any], abstract: Params, classifier: bool,
                   what: str) -> Params:
  """Official state dict -> params laid out as `abstract` (any subtree of ours), strictly."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  names = [_official_name(_path_keys(path), classifier) for path, _ in flat]
  _check_keys(sd, [n for n, _ in names], what)
  leaves = []
  for (_, leaf), (name, kind) in zip(flat, names):
    value = as_numpy(sd[name])
    _check_shape(name, value.shape, _torch_shape(leaf.shape, kind), what)
    leaves.append(_from_torch_layout(value, kind))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def from_videomae_state_dict(sd: Mapping[str, Any], model_cfg: model_lib.ModelConfig) -> Params:
  """Official VideoMAE state dict -> our params (strict; float32 NumPy leaves).

  The pretraining layout for an autoencoder config, the finetune layout for a classifier's.
  """
  _joint_only(model_cfg)
  classifier = model_cfg.num_classes > 0
  return _from_official(sd, abstract_params(model_cfg), classifier, _what(classifier))


def hf_architecture(model_cfg: model_lib.ModelConfig) -> str:
  """The transformers class of `model_cfg`'s model (see the module docstring):
  VideoMAEForVideoClassification for a classifier, VideoMAEModel (the encoder only) with MAM2's
  regressor or motion decoder, else VideoMAEForPreTraining."""
  if model_cfg.num_classes > 0:
    return HF_ARCHITECTURES[True]
  if model_cfg.regressor_depth or model_cfg.motion_heads:
    return HF_ENCODER_ARCHITECTURE
  return HF_ARCHITECTURES[False]


def _architecture_of(official_names) -> str:
  """`hf_architecture` of the model whose official state dict has these names."""
  names = list(official_names)
  if 'head.weight' in names:
    return HF_ARCHITECTURES[True]
  if any(n.startswith(_ENCODER_ONLY_PARTS) for n in names):
    return HF_ENCODER_ARCHITECTURE
  return HF_ARCHITECTURES[False]


def _in_extra(official: str, architecture: str) -> bool:
  """Whether an official name goes to HF_EXTRA_WEIGHTS: a part the HF class has no place for."""
  if architecture == HF_ENCODER_ARCHITECTURE:
    return not official.startswith('encoder.')
  return architecture == HF_ARCHITECTURES[False] and official.startswith('decoder.heads.')


def _hf_parts(official: str, architecture: str) -> tuple[str, ...]:
  """Official name -> its HF name(s): three for the qkv weight (HF splits it), else one."""
  name = official
  for pattern, repl in _HF_PREFIXES[architecture == HF_ARCHITECTURES[True]]:
    name, found = re.subn(pattern, repl, name)
    if found:
      break
  names = (name,)
  layer = _LAYER.match(name)
  if layer:
    prefix, rest = layer.groups()
    names = (tuple(prefix + part for part in _HF_QKV) if rest == _QKV else
             (prefix + _HF_BLOCK[rest],))
  if architecture == HF_ENCODER_ARCHITECTURE:  # the base model's own names: no `videomae.`
    names = tuple(n.removeprefix('videomae.') for n in names)
  return names


def _hf_names(shapes: Mapping[str, Any], architecture: str) -> list[str]:
  """The HF file's keys of a model with these official names (the side file's left out)."""
  return [part for official in shapes if not _in_extra(official, architecture)
          for part in _hf_parts(official, architecture)]


def hf_names(model_cfg: model_lib.ModelConfig) -> list[str]:
  """Every key of an HF checkpoint file of `model_cfg`'s model (`hf_architecture`; q/v
  biases under their checkpoint names, as `save_pretrained` writes them). The parts in
  HF_EXTRA_WEIGHTS (`hf_extra_names`) are not among them."""
  return _hf_names(official_shapes(model_cfg), hf_architecture(model_cfg))


def hf_extra_names(model_cfg: model_lib.ModelConfig) -> list[str]:
  """The official names that an HF export of `model_cfg`'s model keeps in HF_EXTRA_WEIGHTS
  (none for the plain autoencoder and the classifier)."""
  architecture = hf_architecture(model_cfg)
  return [n for n in official_shapes(model_cfg) if _in_extra(n, architecture)]


def to_hf_state_dicts(params: Params) -> tuple[StateDict, StateDict]:
  """Our params -> (HF checkpoint state dict, HF_EXTRA_WEIGHTS state dict), float32 NumPy.

  The first holds the keys of the params' `hf_architecture` under the names transformers'
  own `save_pretrained` writes (4.x and 5.x alike); the second, in official-style names, what
  that class has no place for ({} for the plain autoencoder and the classifier).
  """
  sd = to_videomae_state_dict(params)
  architecture = _architecture_of(sd)
  hf, extra = {}, {}
  for official, value in sd.items():
    if _in_extra(official, architecture):
      extra[official] = value
      continue
    parts = _hf_parts(official, architecture)
    chunks = np.split(value, 3, axis=0) if len(parts) == 3 else [value]
    for part, chunk in zip(parts, chunks):
      hf[part] = np.ascontiguousarray(chunk)
  return hf, extra


def to_hf_state_dict(params: Params, model_cfg: model_lib.ModelConfig) -> StateDict:
  """The HF checkpoint state dict of `to_hf_state_dicts` (`VideoMAEForPreTraining`,
  `VideoMAEModel` or `VideoMAEForVideoClassification`, as the params' parts decide)."""
  del model_cfg  # the layout follows from the params; kept for a symmetric API
  return to_hf_state_dicts(params)[0]


def hf_extra_info(model_cfg: model_lib.ModelConfig) -> dict[str, Any]:
  """The contents of HF_EXTRA_CONFIG: the VARIANT_FIELDS of `model_cfg` (JSON types)."""
  return {'extra_heads': [[n, d] for n, d in model_cfg.extra_heads],
          'motion_heads': [[n, d] for n, d in model_cfg.motion_heads],
          'regressor_depth': model_cfg.regressor_depth}


def hf_extra_fields(info: Mapping[str, Any], what: str = HF_EXTRA_CONFIG) -> dict[str, Any]:
  """HF_EXTRA_CONFIG contents -> ModelConfig fields; strict (KeyError / ValueError name them)."""
  _check_keys(info, VARIANT_FIELDS, what)
  fields = {}
  for field in _HEAD_FIELDS:
    try:
      fields[field] = tuple((str(n), int(d)) for n, d in info[field])
    except (TypeError, ValueError) as e:
      raise ValueError(f'{what}: {field} must list [name, values per token] pairs, got '
                       f'{info[field]!r}') from e
  depth = info['regressor_depth']
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
    raise ValueError(f'{what}: regressor_depth must be an int >= 0, got {depth!r}')
  fields['regressor_depth'] = depth
  return fields


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


def _official_from_hf(sd: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                      architecture: str, what: str) -> StateDict:
  """HF state dict (checkpoint bias names) -> official names of `shapes` (those in the HF
  file), strictly."""
  _check_keys(sd, _hf_names(shapes, architecture), what)
  official = {}
  for name, shape in shapes.items():
    if _in_extra(name, architecture):
      continue
    parts = _hf_parts(name, architecture)
    values = [as_numpy(sd[p]) for p in parts]
    want = (shape[0] // 3, shape[1]) if len(parts) == 3 else shape
    for part, value in zip(parts, values):
      _check_shape(part, value.shape, want, what)
    official[name] = np.concatenate(values, axis=0) if len(parts) == 3 else values[0]
  return official


def from_hf_state_dict(sd: Mapping[str, Any], model_cfg: model_lib.ModelConfig,
                       extra: Mapping[str, Any] | None = None) -> Params:
  """HF state dicts -> our params (strict): `sd` of `model_cfg`'s `hf_architecture` and
  `extra`, the HF_EXTRA_WEIGHTS state dict (official-style names: `hf_extra_names`; None = {}).

  The q/v biases may come under their checkpoint names (`q_bias` / `v_bias`: HF files, 4.x
  modules) or 5.x module names (`query.bias` / `value.bias`); every other key strictly as in
  `hf_names(model_cfg)`. A key missing from or unexpected in either raises KeyError naming it
  (and the file).
  """
  shapes = official_shapes(model_cfg)
  architecture = hf_architecture(model_cfg)
  official = _official_from_hf(hf_bias_keys(sd, 'checkpoint'), shapes, architecture,
                               _hf_what(architecture))
  extra = dict(extra or {})
  _check_extra(extra, shapes, architecture)
  return from_videomae_state_dict({**official, **extra}, model_cfg)


def _check_extra(extra: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                 architecture: str) -> None:
  want = {n: shape for n, shape in shapes.items() if _in_extra(n, architecture)}
  what = f'{HF_EXTRA_WEIGHTS} (the parts {architecture} has no place for)'
  _check_keys(extra, want, what)
  for name, shape in want.items():
    _check_shape(name, np.shape(extra[name]), shape, what)


def check_hf_extra(extra: Mapping[str, Any], model_cfg: model_lib.ModelConfig) -> None:
  """Raises KeyError naming every key an HF_EXTRA_WEIGHTS state dict of `model_cfg`'s model
  lacks or should not have, ValueError naming a wrong shape."""
  _check_extra(extra, official_shapes(model_cfg), hf_architecture(model_cfg))


def check_class_names(model_cfg: model_lib.ModelConfig, names=None) -> list[str]:
  """The classifier's class names: `names` checked (one distinct string per class), or
  `class_<i>`. Raises ValueError for a wrong count, duplicates, or names for an autoencoder."""
  n = model_cfg.num_classes
  if n == 0:
    if names is not None:
      raise ValueError('class names given for the autoencoder (model.num_classes = 0)')
    return []
  if names is None:
    return [f'class_{i}' for i in range(n)]
  names = list(names)
  if len(names) != n:
    raise ValueError(f'{len(names)} class names for model.num_classes = {n}')
  if not all(isinstance(x, str) and x for x in names):
    raise ValueError('class names must be non-empty strings')
  dupes = sorted({x for x in names if names.count(x) > 1})
  if dupes:
    raise ValueError(f'class names must be distinct (HF label2id): repeated {dupes[:5]}')
  return names


def class_names_from_hf(hf: Mapping[str, Any]) -> list[str] | None:
  """The class names of an HF config's `id2label` (keys as ints or JSON strings), in index
  order; None if it has none."""
  id2label = hf.get('id2label')
  if not id2label:
    return None
  table = {int(k): v for k, v in id2label.items()}
  if sorted(table) != list(range(len(table))):
    raise ValueError(f'HF config id2label has indices {sorted(table)[:8]}..., not 0..n-1')
  return [table[i] for i in range(len(table))]


def hf_config(model_cfg: model_lib.ModelConfig, norm_pix: bool = True,
              class_names: list[str] | None = None) -> dict[str, Any]:
  """Keyword arguments of `transformers.VideoMAEConfig` that compute what `model_cfg` does.

  Autoencoder: `VideoMAEForPreTraining` (the final encoder norm: use_mean_pooling=False). All
  but the decoder's final LayerNorm eps, which HF fixes at 1e-5 (see the module docstring).
  With MAM2's regressor or motion decoder: `VideoMAEModel` (`hf_architecture`: the encoder with
  its final norm; the decoder fields are recorded all the same).
  Classifier: `VideoMAEForVideoClassification` with use_mean_pooling=True, num_labels from
  `id2label` / `label2id` of `class_names` (default `class_<i>`); all but `fc_norm`'s eps,
  which HF also fixes at 1e-5. `norm_pix` (the pretraining target) is recorded either way.
  """
  _joint_only(model_cfg)
  c = model_cfg
  classifier = c.num_classes > 0
  height, width = c.img_size
  kwargs = dict(
      architectures=[hf_architecture(c)],
      image_size=height if height == width else [height, width],
      patch_size=c.patch, num_channels=c.in_chans, num_frames=c.num_frames,
      tubelet_size=c.tubelet, hidden_size=c.encoder_dim, num_hidden_layers=c.encoder_depth,
      num_attention_heads=c.encoder_heads, intermediate_size=int(c.encoder_dim * c.mlp_ratio),
      hidden_act='gelu', hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      layer_norm_eps=c.layer_norm_eps, qv_bias=True, use_mean_pooling=classifier,
      decoder_hidden_size=c.decoder_dim, decoder_num_hidden_layers=c.decoder_depth,
      decoder_num_attention_heads=c.decoder_heads,
      decoder_intermediate_size=int(c.decoder_dim * c.mlp_ratio),
      norm_pix_loss=bool(norm_pix))
  names = check_class_names(c, class_names)
  if classifier:
    kwargs.update(id2label=dict(enumerate(names)),
                  label2id={name: i for i, name in enumerate(names)})
  return kwargs


def model_config_from_hf(hf: Mapping[str, Any], classifier: bool | None = None,
                         **overrides: Any) -> model_lib.ModelConfig:
  """An HF VideoMAE config (dict) -> ModelConfig; raises if ours cannot compute the same.

  `classifier`: whether it describes VideoMAEForVideoClassification (then num_classes = its
  label count; it must mean-pool); None: as its `architectures` say.
  """
  def need(field, ok, what):
    if not ok:
      raise ValueError(f'HF config {field}={hf.get(field)!r}: {what} is not supported')
  if classifier is None:
    classifier = HF_ARCHITECTURES[True] in (hf.get('architectures') or [])
  need('qv_bias', hf.get('qv_bias', hf.get('qkv_bias', True)), 'attention without q/v biases')
  if classifier:
    need('use_mean_pooling', hf.get('use_mean_pooling', True),
         'a classifier reading token 0 (VideoMAE has no CLS token; ours mean-pools)')
  else:
    need('use_mean_pooling', not hf.get('use_mean_pooling', True),
         'a pretraining model without the encoder norm (use_mean_pooling=True)')
  need('hidden_act', hf.get('hidden_act', 'gelu') == 'gelu', 'an activation other than gelu')
  patch = hf.get('patch_size', 16)
  need('patch_size', np.ndim(patch) == 0 or len(set(patch)) == 1, 'a non-square patch')
  ratio = hf['intermediate_size'] / hf['hidden_size']
  size = hf.get('image_size', 224)
  fields = dict(
      img_size=(size, size) if np.ndim(size) == 0 else tuple(size),
      num_frames=hf.get('num_frames', 16), tubelet=hf.get('tubelet_size', 2),
      patch=int(np.ravel(patch)[0]), in_chans=hf.get('num_channels', 3),
      encoder_dim=hf['hidden_size'], encoder_depth=hf['num_hidden_layers'],
      encoder_heads=hf['num_attention_heads'], mlp_ratio=ratio,
      layer_norm_eps=hf.get('layer_norm_eps', 1e-12))
  if classifier:  # the decoder fields are unused; num_classes from the labels
    names = class_names_from_hf(hf)
    fields['num_classes'] = len(names) if names else int(hf['num_labels'])
  else:
    need('decoder_intermediate_size',
         hf['decoder_intermediate_size'] == int(hf['decoder_hidden_size'] * ratio),
         'a decoder MLP ratio other than the encoder\'s')
    fields.update(decoder_dim=hf['decoder_hidden_size'],
                  decoder_depth=hf['decoder_num_hidden_layers'],
                  decoder_heads=hf['decoder_num_attention_heads'])
  fields.update(overrides)
  return model_lib.ModelConfig(**fields)


def _depth(sd: Mapping[str, Any], prefix: str) -> int:
  found = {int(m.group(1)) for k in sd for m in [re.match(rf'^{re.escape(prefix)}(\d+)\.', k)]
           if m}
  return max(found) + 1 if found else 0


def _need_keys(sd: Mapping[str, Any], keys, what: str) -> None:
  for key in keys:
    if key not in sd:
      raise KeyError(f'{what}: missing key {key}')


def videomae_recorded_fields(sd: Mapping[str, Any]) -> dict[str, Any]:
  """The ModelConfig fields an official state dict's shapes record.

  Pretraining layout (`encoder.` names): widths, depths, tubelet, patch, channels and MLP
  ratio, and the VARIANT_FIELDS its keys show (extra_heads from `decoder.heads.*`,
  motion_heads from `motion_decoder.heads.*`, regressor_depth from `regressor.blocks.*`; left
  out when it has none of these parts). Finetune layout: the encoder's, and num_classes.
  Never the attention heads, img_size or num_frames (no parameter depends on them).
  """
  if 'encoder.patch_embed.proj.weight' not in sd and 'patch_embed.proj.weight' in sd:
    fields = _encoder_fields(sd, 'videomae_finetune', _what(True))
    _need_keys(sd, ['head.weight'], _what(True))
    return dict(fields, num_classes=tuple(sd['head.weight'].shape)[0])
  _need_keys(sd, ['encoder.patch_embed.proj.weight', 'encoder_to_decoder.weight',
                  'encoder.blocks.0.mlp.fc1.weight'], _what(False))
  fields = _encoder_fields(sd, 'videomae_pretrain', _what(False))
  return dict(fields, decoder_dim=tuple(sd['encoder_to_decoder.weight'].shape)[0],
              decoder_depth=_depth(sd, 'decoder.blocks.'), **_recorded_variant(sd))


def _recorded_variant(sd: Mapping[str, Any]) -> dict[str, Any]:
  """The VARIANT_FIELDS an official pretraining state dict's keys record (those it has)."""
  fields = {}
  for field, prefix in (('extra_heads', 'decoder.heads.'), ('motion_heads',
                                                             'motion_decoder.heads.')):
    heads = tuple((k[len(prefix):-len('.weight')], tuple(v.shape)[0]) for k, v in sd.items()
                  if k.startswith(prefix) and k.endswith('.weight'))
    if heads:
      fields[field] = heads
  depth = _depth(sd, 'regressor.blocks.')
  if depth:
    fields['regressor_depth'] = depth
  return fields


# ---------------------------------------------------------------------------------------------
# A finetune's initial weights: the encoder (and a classifier's fc_norm + head) of any source.

SOURCE_STYLES = {
    'videomae_pretrain': 'official VideoMAE pretraining (modeling_pretrain.py, `encoder.` names)',
    'videomae_finetune': 'official VideoMAE finetuning (modeling_finetune.py, no prefix)',
    'hf': ('HF VideoMAEForPreTraining (`videomae.` names) or VideoMAEModel (no prefix; an '
           f'export\'s {HF_EXTRA_WEIGHTS} beside it holds no encoder part)'),
    'hf_classifier': 'HF VideoMAEForVideoClassification',
}
# (where the patch embedding weight is, the block prefix, the MLP fc1 weight in block 0)
_ENCODER_KEYS = {
    'official': ('patch_embed.proj.weight', 'blocks.', 'blocks.0.mlp.fc1.weight'),
    'hf': (_EMBED + 'weight', 'videomae.encoder.layer.',
           'videomae.encoder.layer.0.intermediate.dense.weight'),
}
_DECODER = 'the pretraining decoder (the classifier has none)'
_EXTRA_HEAD = ('a further prediction head of the pretraining decoder (motion / HOG targets; '
               'the classifier has none)')
_MOTION_DECODER = 'MAM2\'s motion decoder (pretraining only; the classifier has none)'
_REGRESSOR = ('MAM2\'s regressor (it predicts masked tokens\' features for the decoders during '
              'pretraining; the classifier has none)')
_FINAL_NORM = ('the encoder\'s final norm (the classifier has none: it mean-pools the tokens '
               'into fc_norm; VideoMAE\'s finetuning does not load it either)')
_TOKEN0_HEAD = ('the head of a model without mean pooling (it reads token 0 after the final '
                'norm): not what our classifier computes')
# Per style: (key regex, role) in order; role 'encoder' | 'head' | a reason the key is dropped.
_SOURCE_KEYS = {
    'videomae_pretrain': ((r'encoder\.(patch_embed|blocks)\.', 'encoder'),
                          (r'encoder\.norm\.', _FINAL_NORM),
                          (r'decoder\.heads\.', _EXTRA_HEAD),
                          (r'(decoder\.|encoder_to_decoder\.|mask_token$)', _DECODER),
                          (r'motion_decoder\.', _MOTION_DECODER), (r'regressor\.', _REGRESSOR)),
    'videomae_finetune': ((r'(patch_embed|blocks)\.', 'encoder'),
                          (r'(fc_norm|head)\.', 'head'), (r'norm\.', _FINAL_NORM)),
    'hf': ((r'videomae\.(embeddings|encoder)\.', 'encoder'),
           (r'videomae\.layernorm\.', _FINAL_NORM),
           (r'(decoder\.|encoder_to_decoder\.|mask_token$)', _DECODER)),
    'hf_classifier': ((r'videomae\.(embeddings|encoder)\.', 'encoder'),
                      (r'(fc_norm|classifier)\.', 'head'),
                      (r'videomae\.layernorm\.', _FINAL_NORM)),
}
ENCODER_FIELDS = ('encoder_dim', 'encoder_depth', 'tubelet', 'patch', 'in_chans', 'mlp_ratio')


def detect_style(sd: Mapping[str, Any]) -> str:
  """The SOURCE_STYLES name of a state dict, from its keys; ValueError if none fits."""
  if any(k.startswith('encoder.patch_embed.') for k in sd):
    return 'videomae_pretrain'
  if any(k.startswith('patch_embed.') for k in sd):
    return 'videomae_finetune'
  if any(k.startswith(('videomae.embeddings.', 'embeddings.patch_embeddings.')) for k in sd):
    return 'hf_classifier' if 'classifier.weight' in sd else 'hf'
  shown = sorted(sd)[:5]
  raise ValueError(f'not a VideoMAE state dict of a known layout (no patch embedding among '
                   f'its {len(sd)} keys, e.g. {shown}); known: {", ".join(SOURCE_STYLES)}')


def _encoder_fields(sd: Mapping[str, Any], style: str, what: str) -> dict[str, Any]:
  """ENCODER_FIELDS from the (prefix-normalised) encoder keys of `sd`."""
  embed, blocks, fc1 = _ENCODER_KEYS['hf' if style.startswith('hf') else 'official']
  if style == 'videomae_pretrain':
    embed, blocks, fc1 = (f'encoder.{k}' for k in (embed, blocks, fc1))
  _need_keys(sd, [embed, fc1], what)
  dim, chans, tubelet, patch, _ = tuple(sd[embed].shape)
  return dict(encoder_dim=dim, encoder_depth=_depth(sd, blocks), tubelet=tubelet, patch=patch,
              in_chans=chans, mlp_ratio=tuple(sd[fc1].shape)[0] / dim)


def _split_source(sd: Mapping[str, Any], style: str):
  """(kept encoder + head keys, prefix-normalised; {dropped key: reason}; the kept head keys).

  Unknown keys raise KeyError naming them.
  """
  if style.startswith('hf'):
    sd = hf_bias_keys(sd, 'checkpoint')
    if style == 'hf' and not any(k.startswith('videomae.') for k in sd):  # VideoMAEModel
      sd = {f'videomae.{k}': v for k, v in sd.items()}
  kept, dropped, unknown = {}, {}, []
  for key, value in sd.items():
    role = next((r for pattern, r in _SOURCE_KEYS[style] if re.match(pattern, key)), None)
    if role is None:
      unknown.append(key)
    elif role in ('encoder', 'head'):
      name = key[len('encoder.'):] if style == 'videomae_pretrain' else key
      kept[name] = (role, value)
    else:
      dropped[key] = role
  if unknown:
    raise KeyError(f'{SOURCE_STYLES[style]} state dict: unexpected keys {sorted(unknown)}')
  if any(r == _FINAL_NORM for r in dropped.values()):  # a classifier without mean pooling
    for key in [k for k, (role, _) in kept.items() if role == 'head']:
      dropped[key] = _TOKEN0_HEAD
      del kept[key]
  return {k: v for k, (_, v) in kept.items()}, dropped, {
      k for k, (role, _) in kept.items() if role == 'head'}


def backbone_fields(sd: Mapping[str, Any], source_style: str) -> dict[str, Any]:
  """What a source's shapes record of the classifier: ENCODER_FIELDS, and num_classes if it
  has a (mean-pooling) head."""
  if source_style not in SOURCE_STYLES:
    raise ValueError(f'source style {source_style!r}: choose one of {list(SOURCE_STYLES)}')
  kept, _, head = _split_source(sd, source_style)
  what = f'{SOURCE_STYLES[source_style]} state dict'
  style = 'videomae_finetune' if source_style == 'videomae_pretrain' else source_style
  fields = _encoder_fields(kept, style, what)
  if head:
    weight = 'classifier.weight' if source_style == 'hf_classifier' else 'head.weight'
    _need_keys(kept, [weight], what)
    fields['num_classes'] = tuple(kept[weight].shape)[0]
  return fields


def backbone_params(sd: Mapping[str, Any], source_style: str,
                    model_cfg: model_lib.ModelConfig | None = None
                    ) -> tuple[Params, dict[str, str]]:
  """A source's weights as the start of our classifier: (params, {dropped key: reason}).

  `sd`: a state dict in one of SOURCE_STYLES (`detect_style` finds it). `params` is a subtree
  of the classifier's: {"encoder": {"patch_embed", "blocks"}}, plus "fc_norm" and "head" when
  the source is a (mean-pooling) classifier. Dropped on purpose, and listed with the reason:
  the pretraining decoder (`decoder.*`, `encoder_to_decoder`, `mask_token`; a variant's
  `decoder.heads.*`, `motion_decoder.*` and `regressor.*` too, each with its own reason), the
  encoder's final norm (`encoder.norm` / `videomae.layernorm`: VideoMAE's finetuning does not
  load it into fc_norm), the head of a model without mean pooling, and (with `model_cfg`) a head for
  another number of classes (as VideoMAE's finetuning drops it; fc_norm is kept). Any other key
  raises KeyError naming it, as does a missing one; wrong shapes raise ValueError.

  `model_cfg`: the config to initialise; ConfigMismatchError names every ENCODER_FIELDS value
  that differs (heads, frames and image size hold no parameters). Without it the source's own
  architecture is read.
  """
  if model_cfg is not None:
    _joint_only(model_cfg)
  fields = backbone_fields(sd, source_style)
  kept, dropped, head = _split_source(sd, source_style)
  what = f'{SOURCE_STYLES[source_style]} state dict'
  if model_cfg is not None:
    problems = [f'the weights have {f} {fields[f]!r} but the config has '
                f'{getattr(model_cfg, f)!r}' for f in ENCODER_FIELDS
                if not _same(fields[f], getattr(model_cfg, f))]
    if problems:
      raise ConfigMismatchError(f'{what}: ' + '; '.join(problems))
    if head and fields['num_classes'] != model_cfg.num_classes:
      reason = (f'a head for {fields["num_classes"]} classes; the config has '
                f'{model_cfg.num_classes} (VideoMAE\'s finetuning drops it likewise)')
      for key in [k for k in head if k.startswith(('head.', 'classifier.'))]:
        dropped[key] = reason
        del kept[key]
        head.discard(key)
    base = model_cfg
  else:
    base = model_lib.ModelConfig(
        img_size=(fields['patch'],) * 2, num_frames=fields['tubelet'], encoder_heads=1,
        **{f: fields[f] for f in ENCODER_FIELDS})
  has_head = any(k.startswith(('head.', 'classifier.')) for k in head)
  cfg = dataclasses.replace(base, num_classes=fields['num_classes'] if has_head else
                            max(base.num_classes, 1))
  full = abstract_params(cfg)
  abstract = {'encoder': full['encoder']}
  if head:  # fc_norm (and the head, unless dropped): strictly what the source has
    abstract['fc_norm'] = full['fc_norm']
    if has_head:
      abstract['head'] = full['head']
  if source_style.startswith('hf'):
    kept = _official_from_hf(kept, _official_shapes(abstract, True), HF_ARCHITECTURES[True],
                             what)
  return _from_official(kept, abstract, True, what), dict(sorted(dropped.items()))


def hf_extra_dropped(extra: Mapping[str, Any]) -> dict[str, str]:
  """{"HF_EXTRA_WEIGHTS:key": reason} for the side file of an HF export, none of which a
  finetune loads (every part in it is pretraining-only: see `backbone_params`). An encoder key
  (its place is the HF model file) or an unknown one raises KeyError naming it."""
  encoder = sorted(k for k in extra if k.startswith('encoder.'))
  if encoder:
    raise KeyError(f'{HF_EXTRA_WEIGHTS}: unexpected encoder keys {encoder} (the encoder is in '
                   'the HF model file)')
  _, dropped, _ = _split_source(extra, 'videomae_pretrain')
  return {f'{HF_EXTRA_WEIGHTS}:{k}': reason for k, reason in sorted(dropped.items())}


def preset_config(model_cfg: model_lib.ModelConfig) -> dict[str, Any]:
  """`config.model` fields for `model_cfg`: the preset `size` whose architecture it has, if any.

  Returns {'size': NAME, img_size, num_frames, tubelet, patch[, num_classes]} when a preset
  matches (what the trainer's configs can express), else {'size': 'B', every architecture
  field}. A classifier's decoder fields are unused: they do not take part.
  """
  classifier = model_cfg.num_classes > 0
  arch = tuple(f for f in ('in_chans', 'encoder_dim', 'encoder_depth', 'encoder_heads',
                           'decoder_dim', 'decoder_depth', 'decoder_heads', 'mlp_ratio',
                           'layer_norm_eps') if not (classifier and f.startswith('decoder_')))
  height, width = model_cfg.img_size
  base = dict(img_size=height if height == width else [height, width],
              num_frames=model_cfg.num_frames, tubelet=model_cfg.tubelet, patch=model_cfg.patch)
  if classifier:
    base['num_classes'] = model_cfg.num_classes
  for size in model_lib.SIZES:
    preset = model_lib.model_config(size)
    if all(getattr(preset, f) == getattr(model_cfg, f) for f in arch):
      return dict(size=size, **base)
  fields = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)
            if f.name in arch}
  return dict(size='B', **base, **fields)


ARCH_FIELDS = ('img_size', 'num_frames', 'tubelet', 'patch', 'in_chans', 'encoder_dim',
               'encoder_depth', 'encoder_heads', 'decoder_dim', 'decoder_depth', 'decoder_heads',
               'mlp_ratio', 'layer_norm_eps', 'num_classes') + VARIANT_FIELDS
DECODER_FIELDS = ('decoder_dim', 'decoder_depth', 'decoder_heads')


def recorded_for_kind(recorded: Mapping[str, Any]) -> dict[str, Any]:
  """`recorded` without the decoder (and variant) fields when it is a classifier's
  (num_classes > 0): its files may carry them (HF configs always do) but they hold no
  weights."""
  if recorded.get('num_classes', 0) > 0:
    return {k: v for k, v in recorded.items() if k not in DECODER_FIELDS + VARIANT_FIELDS}
  return dict(recorded)


class ConfigMismatchError(ValueError):
  """Weights that a config cannot hold; the message names every field that differs."""


def _same(a, b) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    return math.isclose(a, b, rel_tol=1e-9)
  return tuple(a) == tuple(b) if isinstance(a, (tuple, list)) else a == b


def _show(value) -> str:
  if isinstance(value, (tuple, list)) and all(isinstance(v, (tuple, list)) for v in value):
    return '(' + ', '.join(f'{n}: {d}' for n, d in value) + ')'  # heads (name, dim)
  return f'({value[0]}, {value[1]})' if isinstance(value, (tuple, list)) else f'{value!r}'


def _normalised(field: str, value):
  """A recorded field as ModelConfig holds it; heads sorted by name (their order holds no
  weights: each is its own Linear)."""
  if field in _HEAD_FIELDS:
    return tuple(sorted((str(n), int(d)) for n, d in value))
  return tuple(value) if field == 'img_size' else value


def _field_source(field: str, section: Mapping[str, Any]) -> str:
  """Where a config's value of an ARCH_FIELDS field comes from, with its verb, for messages."""
  if field in _HEAD_FIELDS:
    return 'loss weights and model.motion_decoder (targets.model_config) give'
  if field in section:
    return f'model.{field}={_show(section[field])} gives'
  return f'model.size={section["size"]!r} gives'


def _variant_hint(recorded: Mapping[str, Any], built: model_lib.ModelConfig
                  ) -> tuple[list[str], list[str]]:
  """(flags, notes) that make a config's variant (heads, regressor) that of `recorded`."""
  flags = []
  depth = recorded.get('regressor_depth', built.regressor_depth)
  if depth != built.regressor_depth:
    flags.append(f'--config.model.regressor_depth={depth}')
  if all(recorded.get(f, ()) == _normalised(f, getattr(built, f)) for f in _HEAD_FIELDS
         if f in recorded):
    return flags, []
  want = {n for f in _HEAD_FIELDS for n, _ in recorded.get(f, getattr(built, f))}
  have = {n for f in _HEAD_FIELDS for n, _ in getattr(built, f)}
  flags += [f'--config.loss.{n}=1.0' for n in sorted(want - have)]
  flags += [f'--config.loss.{n}=0.0' for n in sorted(have - want)]
  motion = bool(recorded.get('motion_heads', built.motion_heads))
  if motion != bool(built.motion_heads):
    flags.append(f'--config.model.motion_decoder={motion}')
  return flags, ['a loss term has its head while its weight is > 0 (choose yours); head widths '
                 'follow the data stride and the loss options (targets.from_config)']


def _override_hint(wanted: model_lib.ModelConfig, built: model_lib.ModelConfig,
                   section: Mapping[str, Any], what: str) -> tuple[list[str], list[str]]:
  """(`--config.model.*` flags, notes) that make `what`'s model section build `wanted`."""
  fields = preset_config(wanted)
  if 'encoder_dim' in fields:  # no preset size has this architecture
    shown = [k for k in ARCH_FIELDS if k in fields]
    return [], [f'no preset size has this architecture: use a config file whose model section '
                f'sets {", ".join(f"{k}={_show(getattr(wanted, k))}" for k in shown)}']
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
  `videomae_recorded_fields(sd)`; the others come from the config; a classifier's without the
  decoder and variant fields, see `recorded_for_kind`). The config's ModelConfig is
  `targets.model_config(config)`: its heads follow from the loss weights (`extra_heads`,
  `motion_heads`; compared regardless of order), its regressor from model.regressor_depth.
  `norm_pix`: the target the
  weights were trained with, if recorded, checked against `config.loss.norm_pix`. Raises
  ConfigMismatchError naming every field that differs, with the `--config.*` overrides that
  would fit (or what a config file must set), and for non-square clips (the trainer crops
  squares).
  """
  recorded = {k: _normalised(k, v) for k, v in recorded.items()}
  unknown = sorted(set(recorded) - set(ARCH_FIELDS))
  if unknown:
    raise ValueError(f'not architecture fields: {unknown}')
  size = recorded.get('img_size')
  if size is not None and size[0] != size[1]:
    raise ConfigMismatchError(
        f'img_size {_show(size)}: the trainer needs square clips (its input pipeline crops '
        'squares, as VideoMAE does), so these weights cannot be trained by launch/main.py')
  section = config.model
  built = targets_lib.model_config(config)  # the heads follow from config.loss
  if built.img_size[0] != built.img_size[1]:
    raise ConfigMismatchError(f'{what}\'s model.img_size {_show(built.img_size)}: the trainer '
                              'needs square clips')
  problems, arch_differs = [], False
  for field in ARCH_FIELDS:
    have = _normalised(field, getattr(built, field))
    if field in recorded and not _same(recorded[field], have):
      problems.append(f'the weights have {field} {_show(recorded[field])} but {what}\'s '
                      f'{_field_source(field, section)} {_show(have)}')
      arch_differs = arch_differs or field not in VARIANT_FIELDS
  flags, notes = [], []
  if problems:
    flags, notes = _variant_hint(recorded, built)
    try:
      wanted = dataclasses.replace(built, **recorded)
    except ValueError:
      wanted = None  # e.g. widths that the config's head counts do not divide
    if wanted is not None and arch_differs:
      more_flags, more_notes = _override_hint(wanted, built, section, what)
      flags, notes = more_flags + flags, more_notes + notes
    if recorded.get('num_classes', 0) == 0 < built.num_classes:
      notes.append('pretraining weights start a finetune through --config.init=THEM instead')
  loss = config.get('loss', {})
  if norm_pix is not None and 'norm_pix' in loss and bool(loss['norm_pix']) != bool(norm_pix):
    problems.append(f'the weights were trained with norm_pix={bool(norm_pix)} but {what}\'s '
                    f'loss.norm_pix={bool(loss["norm_pix"])}')
    flags.append(f'--config.loss.norm_pix={bool(norm_pix)}')
  if problems:
    hint = '; '.join(([f'pass {" ".join(flags)}'] if flags else []) + notes)
    raise ConfigMismatchError('; '.join(problems) + (f' (to import them: {hint})' if hint else ''))
  return built
