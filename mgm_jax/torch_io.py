"""PyTorch weight files (HF transformers, official VideoMAE) and their numerical check.

Needs the `torch` extra (torch, transformers, safetensors); the name mapping itself is in
`mgm_jax.export`. What the commands launch/export_torch.py and launch/import_torch.py do is
`export_run` + `verify_export` and `import_run` here. Both models are handled, the one a
run's config describes (`model.num_classes` > 0: the classifier). Files written:

  HF (`save_hf(dir)`):       dir/config.json, dir/model.safetensors (the key names that
                             transformers' own `save_pretrained` writes); loads with
                             `VideoMAEForPreTraining.from_pretrained(dir)` / `VideoMAEModel...`
                             (autoencoder) or `VideoMAEForVideoClassification...` (classifier,
                             `id2label` from the class names) under transformers 4.x and 5.x.
                             A pretraining variant (`export` module docstring) adds
                             dir/mgm_extra.safetensors (the parts no HF class has, official-style
                             names) and dir/mgm_extra.json (its heads and regressor depth); with
                             a regressor or motion decoder the HF class is `VideoMAEModel` (the
                             encoder). `load_hf_extra` reads them back; `read_weights` /
                             `import_run` need both files and check them strictly.
  VideoMAE (`save_videomae(dir)`): dir/videomae_pretrain.{safetensors,pth} (autoencoder) or
                             dir/videomae_finetune.{safetensors,pth} (classifier: the names of
                             `modeling_finetune.py`, which VideoMAE's `--finetune` / `--eval`
                             load); the .pth holds {"model": state dict}, tensors only
                             (`torch.load(weights_only=True)`); dir/model_config.json (our
                             ModelConfig: heads, img_size, frames; the class names).

A classifier run's class names are read from `<workdir>/class_names.txt` (one per line;
`import_run` writes it from an HF `id2label`), else given, else `class_<i>`.
`read_init_weights(src)` reads any of these layouts as a finetune's start.

An export refuses a non-empty directory unless `overwrite=True`, which first removes the weight
and config files of either layout that it finds there (`clear_export_dir`; other files stay).
Written files get the permissions a plain `open()` gives (0o666 minus the umask): safetensors
itself creates them 0600.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import pickle
from typing import Any, Mapping

from flax import nnx
import jax
import numpy as np

from mgm_jax import export
from mgm_jax import masking
from mgm_jax import model as model_lib
from mgm_jax import workdir as workdir_lib

VIDEOMAE_NAME = 'videomae_pretrain'
VIDEOMAE_FINETUNE_NAME = 'videomae_finetune'
MODEL_CONFIG_FILE = 'model_config.json'
CLASS_NAMES_FILE = 'class_names.txt'  # in a run directory: a classifier's names, one a line
# What `clear_export_dir` removes: our two layouts' files and every weight/config file name that
# transformers reads for a model (so that no stale weights are left beside a new export).
EXPORT_FILE_PATTERNS = (
    'config.json', 'generation_config.json', 'model.safetensors', 'model.safetensors.index.json',
    'model-*-of-*.safetensors', 'pytorch_model.bin', 'pytorch_model.bin.index.json',
    'pytorch_model-*-of-*.bin', 'tf_model.h5', 'flax_model.msgpack',
    f'{VIDEOMAE_NAME}.safetensors', f'{VIDEOMAE_NAME}.pth', f'{VIDEOMAE_FINETUNE_NAME}.safetensors',
    f'{VIDEOMAE_FINETUNE_NAME}.pth', MODEL_CONFIG_FILE, export.HF_EXTRA_WEIGHTS,
    export.HF_EXTRA_CONFIG)


def videomae_name(model_cfg: model_lib.ModelConfig) -> str:
  """The official-layout file stem of `model_cfg`'s model."""
  return VIDEOMAE_FINETUNE_NAME if model_cfg.num_classes > 0 else VIDEOMAE_NAME


def clear_export_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> list[str]:
  """Makes `out_dir` ready for an export; returns the names of the files it removed.

  A missing or empty directory is fine. A non-empty one raises FileExistsError naming what it
  holds, unless `overwrite`: then the files matching EXPORT_FILE_PATTERNS are removed (any other
  file is left alone: it cannot be mistaken for weights).
  """
  out_dir = os.fspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f'{out_dir} exists and is not a directory')
  present = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
  if not present:
    return []
  if not overwrite:
    shown = ', '.join(present[:8]) + (', ...' if len(present) > 8 else '')
    raise FileExistsError(f'{out_dir} is not empty ({shown}); choose an empty directory or '
                          'overwrite (--overwrite), which removes its weight and config files')
  removed = [n for n in present if any(fnmatch.fnmatchcase(n, p) for p in EXPORT_FILE_PATTERNS)
             and os.path.isfile(os.path.join(out_dir, n))]
  for name in removed:
    os.remove(os.path.join(out_dir, name))
  return removed


def _umask() -> int:
  try:  # Linux: read it without changing it (os.umask sets it process-wide, for every thread)
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except OSError:
    pass
  umask = os.umask(0o022)
  os.umask(umask)
  return umask


def _make_readable(*paths: str) -> None:
  """Gives `paths` the mode a plain `open()` would (0o666 minus the umask)."""
  umask = _umask()
  for path in paths:
    os.chmod(path, 0o666 & ~umask)


def _hf_classes():
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers


def _architecture(hf_config_kwargs: Mapping[str, Any]) -> str:
  return (hf_config_kwargs.get('architectures') or ['VideoMAEForPreTraining'])[0]


_HF_CLASS_NAMES = (*export.HF_ARCHITECTURES.values(), export.HF_ENCODER_ARCHITECTURE)


def hf_model_class(hf_config_kwargs: Mapping[str, Any]):
  """The transformers class of an `export.hf_config`: VideoMAEForPreTraining, VideoMAEModel
  (a variant with a regressor or motion decoder) or VideoMAEForVideoClassification (its
  `architectures`)."""
  name = _architecture(hf_config_kwargs)
  if name not in _HF_CLASS_NAMES:
    raise ValueError(f'HF architecture {name!r}: expected one of {sorted(_HF_CLASS_NAMES)}')
  return getattr(_hf_classes(), name)


def hf_expected_shapes(hf_config_kwargs: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """Keys and shapes of a freshly built transformers model of that config (meta device)."""
  import torch  # pylint: disable=g-import-not-at-top
  tf = _hf_classes()
  # The position tables (Python loops, no parameters) are cheap at 2 frames of 1 patch.
  small = dict(hf_config_kwargs, num_frames=hf_config_kwargs['tubelet_size'],
               image_size=hf_config_kwargs['patch_size'])
  with torch.device('meta'):
    model = hf_model_class(hf_config_kwargs)(tf.VideoMAEConfig(**small))
  return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _module_style(keys) -> str:
  """The q/v bias naming of an installed transformers module's state dict (see export)."""
  return 'module' if any(k.endswith('.attention.attention.query.bias') for k in keys) else (
      'checkpoint')


def check_hf_state_dict(sd: Mapping[str, Any], hf_config_kwargs: Mapping[str, Any]) -> None:
  """Raises KeyError/ValueError naming any key the installed transformers would not load.

  `sd` may name the q/v biases either way (checkpoint or 5.x module names, see `export`): the
  installed module renames them on load; every other key must be exactly the module's.
  """
  want = hf_expected_shapes(hf_config_kwargs)
  sd = export.hf_bias_keys(sd, _module_style(want))
  missing, unexpected = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
  if missing or unexpected:
    raise KeyError(f'transformers {_hf_classes().__version__} {_architecture(hf_config_kwargs)}'
                   f': missing keys {missing}; unexpected keys {unexpected}')
  for k, shape in want.items():
    if tuple(sd[k].shape) != shape:
      raise ValueError(f'{k} has shape {tuple(sd[k].shape)}, transformers expects {shape}')


def _check_kind(params, model_cfg: model_lib.ModelConfig) -> None:
  kind = 'classifier' if export.is_classifier(params) else 'autoencoder'
  if (kind == 'classifier') != (model_cfg.num_classes > 0):
    raise ValueError(f'{kind} params for a model config with num_classes='
                     f'{model_cfg.num_classes}')


def save_hf(params, model_cfg: model_lib.ModelConfig, norm_pix: bool,
            out_dir: str | os.PathLike, overwrite: bool = False,
            class_names: list[str] | None = None) -> str:
  """Writes config.json + model.safetensors for transformers; returns out_dir.

  The keys are those transformers' `save_pretrained` writes (see `export.to_hf_state_dicts`)
  for `export.hf_architecture(model_cfg)`: VideoMAEForPreTraining, VideoMAEModel (a variant
  with a regressor or motion decoder), or VideoMAEForVideoClassification for a classifier config
  (then `class_names`, default `class_<i>`, become id2label / label2id). A variant's parts that
  the class has no place for go to mgm_extra.safetensors (official-style names) and its
  variant fields to mgm_extra.json. `overwrite`: see `clear_export_dir` (without it, a
  non-empty out_dir raises).
  """
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  _check_kind(params, model_cfg)
  kwargs = export.hf_config(model_cfg, norm_pix, class_names)
  sd, extra = export.to_hf_state_dicts(params)
  check_hf_state_dict(sd, kwargs)
  export.check_hf_extra(extra, model_cfg)
  out_dir = os.fspath(out_dir)
  clear_export_dir(out_dir, overwrite)
  os.makedirs(out_dir, exist_ok=True)
  _hf_classes().VideoMAEConfig(**kwargs).save_pretrained(out_dir)
  weights = os.path.join(out_dir, 'model.safetensors')
  safetensors.numpy.save_file(sd, weights, metadata={'format': 'pt'})
  written = [weights, os.path.join(out_dir, 'config.json')]
  if extra:
    written += _save_hf_extra(extra, model_cfg, out_dir)
  _make_readable(*written)
  return out_dir


def _save_hf_extra(extra: Mapping[str, np.ndarray], model_cfg: model_lib.ModelConfig,
                   out_dir: str) -> list[str]:
  """Writes mgm_extra.safetensors + mgm_extra.json; returns their paths."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  weights = os.path.join(out_dir, export.HF_EXTRA_WEIGHTS)
  safetensors.numpy.save_file(dict(extra), weights, metadata={'format': 'pt'})
  info = os.path.join(out_dir, export.HF_EXTRA_CONFIG)
  with open(info, 'w', encoding='utf-8') as f:
    json.dump(export.hf_extra_info(model_cfg), f, indent=2)
  return [weights, info]


def load_hf_extra(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(mgm_extra.safetensors state dict, mgm_extra.json as ModelConfig fields) of an HF export
  directory; ({}, {}) when it has neither (a plain VideoMAE model).

  One without the other raises FileNotFoundError naming the missing file; a malformed
  mgm_extra.json raises ValueError / KeyError naming the field.
  """
  src = os.fspath(src)
  weights, info = (os.path.join(src, n) for n in (export.HF_EXTRA_WEIGHTS,
                                                 export.HF_EXTRA_CONFIG))
  if not os.path.exists(weights) and not os.path.exists(info):
    return {}, {}
  for path, other in ((weights, info), (info, weights)):
    if not os.path.exists(path):
      raise FileNotFoundError(f'{src}: no {os.path.basename(path)} beside '
                              f'{os.path.basename(other)} (an HF export of a pretraining '
                              'variant writes both)')
  try:
    with open(info, encoding='utf-8') as f:
      fields = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{info}: not JSON ({e})') from e
  if not isinstance(fields, Mapping):
    raise ValueError(f'{info}: holds a {type(fields).__name__}, not an object')
  return _load_safetensors(weights), export.hf_extra_fields(fields, info)


def load_hf(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(state dict, config dict) of an HF VideoMAE directory.

  Weights from model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin
  (in that order). Raises FileNotFoundError / ValueError naming what is missing or unreadable.
  """
  src = os.fspath(src)
  if not os.path.isdir(src):
    raise FileNotFoundError(f'{src}: no such directory (an HF model directory holds config.json '
                            'and model.safetensors)')
  config_path = os.path.join(src, 'config.json')
  if not os.path.exists(config_path):
    raise FileNotFoundError(f'{src}: no config.json (not an HF model directory)')
  try:
    with open(config_path, encoding='utf-8') as f:
      config = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{config_path}: not JSON ({e})') from e
  single, index = (os.path.join(src, n) for n in ('model.safetensors',
                                                 'model.safetensors.index.json'))
  if os.path.exists(single):
    return _load_safetensors(single), config
  if os.path.exists(index):
    with open(index, encoding='utf-8') as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    sd = {}
    for shard in shards:
      sd.update(_load_safetensors(os.path.join(src, shard)))
    return sd, config
  path = os.path.join(src, 'pytorch_model.bin')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{src}: no model.safetensors, model.safetensors.index.json or '
                            'pytorch_model.bin')
  return {k: export.as_numpy(v) for k, v in _torch_load(path).items()}, config


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  try:
    return dict(safetensors.numpy.load_file(path))
  except Exception as e:  # safetensors' own error type is not exported stably
    raise ValueError(f'{path}: not a readable .safetensors file ({e})') from e


def _torch_load(path: str) -> dict[str, Any]:
  """A tensors-only PyTorch file (`weights_only`; official checkpoints' argparse `args` too)."""
  import torch  # pylint: disable=g-import-not-at-top
  try:
    with torch.serialization.safe_globals([argparse.Namespace]):
      sd = torch.load(path, map_location='cpu', weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
    raise ValueError(f'{path}: not a readable tensors-only PyTorch file ({e})') from e
  if not isinstance(sd, Mapping):
    raise ValueError(f'{path}: holds a {type(sd).__name__}, not a state dict')
  return sd


def save_videomae(params, model_cfg: model_lib.ModelConfig, out_dir: str | os.PathLike,
                  norm_pix: bool = True, overwrite: bool = False,
                  class_names: list[str] | None = None) -> dict[str, str]:
  """Writes the official-layout state dict as .safetensors and .pth; returns their paths.

  videomae_pretrain.* for the autoencoder, videomae_finetune.* for a classifier config (the
  .pth as VideoMAE's `utils.save_model` writes it: {"model": state dict}). Also writes
  model_config.json (with `class_names` for a classifier). `overwrite`: see
  `clear_export_dir`.
  """
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  _check_kind(params, model_cfg)
  names = export.check_class_names(model_cfg, class_names)
  sd = export.to_videomae_state_dict(params)
  out_dir = os.fspath(out_dir)
  clear_export_dir(out_dir, overwrite)
  os.makedirs(out_dir, exist_ok=True)
  paths = {ext: os.path.join(out_dir, f'{videomae_name(model_cfg)}.{ext}')
           for ext in ('safetensors', 'pth')}
  safetensors.numpy.save_file(sd, paths['safetensors'], metadata={'format': 'pt'})
  torch.save({'model': {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, paths['pth'])
  cfg = dict(dataclasses.asdict(model_cfg), norm_pix=bool(norm_pix))
  if names:
    cfg['class_names'] = names
  config_path = os.path.join(out_dir, MODEL_CONFIG_FILE)
  with open(config_path, 'w', encoding='utf-8') as f:
    json.dump(cfg, f, indent=2)
  _make_readable(*paths.values(), config_path)
  return paths


def load_videomae(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """An official-layout state dict from .safetensors or a .pth/.pt ({'model'|'module': sd})."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file (an official VideoMAE checkpoint is a .pth '
                            'or .safetensors file)')
  if path.endswith('.safetensors'):
    return _load_safetensors(path)
  sd = _torch_load(path)
  for wrapper in ('model', 'module'):
    if isinstance(sd.get(wrapper), Mapping):
      sd = sd[wrapper]
      break
  return {k: export.as_numpy(v) for k, v in sd.items()}


def check_inputs(model_cfg: model_lib.ModelConfig, seed: int = 0):
  """A clip and a non-trivial MGM mask for the check.

  Returns (video float32 [1, T, H, W, C] ImageNet-normalised, mask bool [1, N], num_masked).
  The mask follows a synthetic motion map: a blob crossing the frame diagonally.
  """
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, (1, model_cfg.num_frames, *model_cfg.img_size,
                                 model_cfg.in_chans), dtype=np.uint8)
  video, _ = model_lib.normalize(frames)
  t, h, w = model_cfg.grid
  yy, xx = np.mgrid[0:2 * h, 0:2 * w]
  motion = np.stack([np.exp(-((yy - (2 * h - 1) * s / max(t - 1, 1)) ** 2 +
                              (xx - (2 * w - 1) * s / max(t - 1, 1)) ** 2) / 8.0)
                     for s in range(t)]).astype(np.float32)
  mask = masking.make_mask('mgm', (t, h, w), 0.75, rng, motion=motion).reshape(1, -1)
  return np.asarray(video), mask, int(mask.sum())


def jax_outputs(model: model_lib.MaskedAutoencoder, video, mask, num_masked: int):
  """(visible-token encoder features, masked-token predictions) of our model, NumPy."""
  @nnx.jit
  def run(m, v, k):
    return m.encode(v, k, num_masked), m(v, k, num_masked=num_masked)
  feats, pred = run(model, video, mask)
  return np.asarray(feats), np.asarray(pred)


def _torch_video(video):
  """Our [B, T, H, W, C] -> HF's [B, T, C, H, W] tensor (the same ImageNet normalisation)."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(np.asarray(video).transpose(0, 1, 4, 2, 3)))


def hf_outputs(hf_model, video, mask):
  """The same from a transformers VideoMAEForPreTraining ([B, T, C, H, W] input)."""
  import torch  # pylint: disable=g-import-not-at-top
  x = _torch_video(video)
  m = torch.from_numpy(np.asarray(mask))
  with torch.no_grad():
    feats = hf_model.videomae(x, bool_masked_pos=m).last_hidden_state
    pred = hf_model(x, bool_masked_pos=m).logits
  return feats.numpy(), pred.numpy()


def hf_encoder_outputs(hf_model, video, mask):
  """(visible-token features, every token's features) of a transformers VideoMAEModel."""
  import torch  # pylint: disable=g-import-not-at-top
  x = _torch_video(video)
  with torch.no_grad():
    feats = hf_model(x, bool_masked_pos=torch.from_numpy(np.asarray(mask))).last_hidden_state
    all_feats = hf_model(x).last_hidden_state
  return feats.numpy(), all_feats.numpy()


def jax_classifier_outputs(model: model_lib.VideoClassifier, video):
  """(encoder features of every token, logits) of our classifier, NumPy."""
  @nnx.jit
  def run(m, v):
    return m.encoder(v), m(v)
  feats, logits = run(model, video)
  return np.asarray(feats), np.asarray(logits)


def hf_classifier_outputs(hf_model, video):
  """The same from a transformers VideoMAEForVideoClassification."""
  import torch  # pylint: disable=g-import-not-at-top
  x = _torch_video(video)
  with torch.no_grad():
    feats = hf_model.videomae(x).last_hidden_state
    logits = hf_model(pixel_values=x).logits
  return feats.numpy(), logits.numpy()


def _eps_matched(norm, eps: float, run):
  """`run()` with the LayerNorm `norm`'s eps set to `eps` for the call."""
  old_eps = norm.eps
  norm.eps = eps
  try:
    return run()
  finally:
    norm.eps = old_eps


def compare_with_hf(model, hf_model, seed: int = 0) -> dict[str, float]:
  """Max abs differences, ours vs the HF model, on one random clip (+ an MGM mask).

  Autoencoder vs VideoMAEForPreTraining: 'features' (encoder, visible tokens), 'predictions'
  (pixels; HF as given, decoder norm eps 1e-5), 'predictions_eps_matched' (HF decoder norm eps
  set to ours for the comparison). Autoencoder vs VideoMAEModel (a variant with a regressor or
  motion decoder: HF holds the encoder only): 'features' and 'features_all' (every token, no
  mask). Classifier vs VideoMAEForVideoClassification: 'features' (every
  token, no final norm), 'logits' (HF fc_norm eps set to ours, 1e-6 as VideoMAE's) and
  'logits_as_loaded' (HF's fixed fc_norm eps 1e-5).
  """
  video, mask, num_masked = check_inputs(model.config, seed)
  eps = model.config.layer_norm_eps
  if isinstance(model, model_lib.VideoClassifier):
    feats, logits = jax_classifier_outputs(model, video)
    hf_feats, hf_logits = hf_classifier_outputs(hf_model, video)
    _, hf_matched = _eps_matched(hf_model.fc_norm, eps,
                                 lambda: hf_classifier_outputs(hf_model, video))
    return {'features': float(np.abs(feats - hf_feats).max()),
            'logits': float(np.abs(logits - hf_matched).max()),
            'logits_as_loaded': float(np.abs(logits - hf_logits).max())}
  if not hasattr(hf_model, 'decoder'):  # VideoMAEModel
    feats = np.asarray(nnx.jit(lambda m, v, k: m.encode(v, k, num_masked))(model, video, mask))
    all_feats = np.asarray(nnx.jit(lambda m, v: m.encode(v))(model, video))
    hf_feats, hf_all = hf_encoder_outputs(hf_model, video, mask)
    return {'features': float(np.abs(feats - hf_feats).max()),
            'features_all': float(np.abs(all_feats - hf_all).max())}
  feats, pred = jax_outputs(model, video, mask, num_masked)
  hf_feats, hf_pred = hf_outputs(hf_model, video, mask)
  _, hf_pred_matched = _eps_matched(hf_model.decoder.norm, eps,
                                    lambda: hf_outputs(hf_model, video, mask))
  return {'features': float(np.abs(feats - hf_feats).max()),
          'predictions': float(np.abs(pred - hf_pred).max()),
          'predictions_eps_matched': float(np.abs(pred - hf_pred_matched).max())}


# What must be small among `verify_export`'s differences (the eps-matched ones, not 'as loaded').
_CHECKED = ('features', 'features_all', 'predictions_eps_matched', 'logits', 'weights')


def checked_difference(diffs: Mapping[str, float]) -> float:
  """The largest of `compare_with_hf` / `verify_export`'s differences that must be small."""
  return max(diffs[k] for k in _CHECKED if k in diffs)


def hf_model_from_state_dict(sd: Mapping[str, np.ndarray], hf_config_kwargs: Mapping[str, Any]):
  """The transformers model of `hf_config_kwargs` (`hf_model_class`) holding `sd`, loaded
  strictly (eval mode)."""
  import torch  # pylint: disable=g-import-not-at-top
  tf = _hf_classes()
  hf = hf_model_class(hf_config_kwargs)(tf.VideoMAEConfig(**hf_config_kwargs)).eval()
  sd = export.hf_bias_keys(sd, _module_style(hf.state_dict()))
  hf.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
  return hf


# ---------------------------------------------------------------------------------------------
# Runs <-> PyTorch files (what launch/export_torch.py and launch/import_torch.py do).

# The errors those commands report as one line: missing or unreadable files, strict keys and
# shapes, a config that does not fit the weights, a non-empty output directory.
EXPECTED_ERRORS = (KeyError, ValueError, OSError, workdir_lib.WorkdirError)


def error_line(error: BaseException) -> str:
  """One line for an EXPECTED_ERRORS error (KeyError's message without its repr quotes)."""
  message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  return ' '.join(str(message).split())


def _read_run_config(workdir: str):
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir {workdir}: no such directory')
  if not os.path.exists(os.path.join(workdir, 'config.json')):
    raise FileNotFoundError(f'--workdir {workdir}: no config.json (not a training run '
                            'directory)')
  config = workdir_lib.read_config(workdir)
  if 'model' not in config:
    raise ValueError(f'{workdir}/config.json has no model section (not a training run config)')
  return config


def load_run(workdir: str, step: int | None = None, weights: str = 'auto'):
  """`inference.Loaded` of run `workdir` (either model) at `step` (default the latest).

  `weights`: 'params', 'ema' (the run's moving average, optim.ema_decay > 0) or 'auto' (the
  EMA when the run keeps one: what it evaluates).
  """
  from mgm_jax import inference  # pylint: disable=g-import-not-at-top
  ema = inference.uses_ema(_read_run_config(os.fspath(workdir)), weights)
  return inference.load(workdir, step, ema=ema)


def run_class_names(workdir: str, model_cfg: model_lib.ModelConfig) -> list[str] | None:
  """`<workdir>/class_names.txt` (one name a line), checked against the model; None if absent."""
  path = os.path.join(os.fspath(workdir), CLASS_NAMES_FILE)
  if model_cfg.num_classes == 0 or not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    names = [line.rstrip('\n') for line in f if line.strip()]
  try:
    return export.check_class_names(model_cfg, names)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e


def export_run(workdir: str, out: str, fmt: str, step: int | None = None,
               overwrite: bool = False, class_names: list[str] | None = None,
               weights: str = 'auto'):
  """Writes the weights of run `workdir` (at `step`, default the latest) to `out` as `fmt`.

  Either model: a classifier run (`model.num_classes` > 0) becomes an HF
  VideoMAEForVideoClassification or the official finetune layout. `class_names`: default the
  run's class_names.txt, else `class_<i>`. `weights`: see `load_run`.

  Returns (the run as loaded, the files removed from `out`). `overwrite`: see
  `clear_export_dir`; without it a non-empty `out` raises FileExistsError before anything is
  written.
  """
  if fmt not in ('hf', 'videomae'):
    raise ValueError(f'format {fmt!r}: choose hf or videomae')
  run = load_run(workdir, step, weights)
  params = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
  model_cfg = run.model.config
  if class_names is None:
    class_names = run_class_names(workdir, model_cfg)
  names = export.check_class_names(model_cfg, class_names) or None
  norm_pix = bool(run.config.get('loss', {}).get('norm_pix', True))
  removed = clear_export_dir(out, overwrite)
  if fmt == 'hf':
    save_hf(params, model_cfg, norm_pix, out, overwrite=True, class_names=names)
  else:
    save_videomae(params, model_cfg, out, norm_pix, overwrite=True, class_names=names)
  return run, removed


def read_back(out: str, fmt: str, model_cfg: model_lib.ModelConfig, norm_pix: bool):
  """The files `export_run` wrote, loaded into transformers (`export.hf_architecture`:
  VideoMAEForPreTraining, VideoMAEModel for a variant with a regressor or motion decoder,
  VideoMAEForVideoClassification for a classifier).

  hf: `from_pretrained`, failing on any missing, unexpected or mismatched key; videomae: the
  .pth and .safetensors must agree, then strict import and the HF mapping.
  """
  kwargs = export.hf_config(model_cfg, norm_pix)
  if fmt == 'hf':
    hf, info = hf_model_class(kwargs).from_pretrained(out, output_loading_info=True)
    bad = {k: sorted(map(str, v)) for k, v in info.items() if v}
    if bad:  # missing / unexpected / mismatched keys or load errors
      raise KeyError(f'transformers did not load {out} cleanly: {bad}')
    return hf.eval()
  name = videomae_name(model_cfg)
  sd = load_videomae(os.path.join(out, f'{name}.pth'))
  sd_st = load_videomae(os.path.join(out, f'{name}.safetensors'))
  for k in sd:
    if not (sd[k] == sd_st[k]).all():
      raise ValueError(f'{k} differs between the .pth and the .safetensors files')
  params = export.from_videomae_state_dict(sd, model_cfg)
  return hf_model_from_state_dict(export.to_hf_state_dict(params, model_cfg), kwargs)


def exported_params(out: str, fmt: str, model_cfg: model_lib.ModelConfig):
  """Our params from the files `export_run` wrote to `out` (strict): hf, its model.safetensors
  and (a variant) mgm_extra.safetensors; videomae, the .safetensors file."""
  if fmt == 'hf':
    sd, _ = load_hf(out)
    extra, _ = load_hf_extra(out)
    return export.from_hf_state_dict(sd, model_cfg, extra)
  path = os.path.join(out, f'{videomae_name(model_cfg)}.safetensors')
  return export.from_videomae_state_dict(load_videomae(path), model_cfg)


def verify_export(run, out: str, fmt: str) -> dict[str, float]:
  """`compare_with_hf` of the run's model (float32) and the files written to `out`, plus
  'weights': the largest difference of any parameter read back (`exported_params`; 0 when
  exact), which covers the parts no HF class holds (a variant's heads, regressor, decoders)."""
  params = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
  model_cfg = run.model.config
  norm_pix = bool(run.config.get('loss', {}).get('norm_pix', True))
  cfg32 = dataclasses.replace(model_cfg, dtype='float32', attention_impl=None)
  diffs = compare_with_hf(model_lib.from_params(cfg32, params),
                          read_back(out, fmt, model_cfg, norm_pix))
  back = exported_params(out, fmt, model_cfg)
  diffs['weights'] = max(jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), params, back)))
  return diffs


def _saved_model_config(src: str) -> dict[str, Any] | None:
  """model_config.json beside an official-layout file (written by `save_videomae`), if any."""
  saved = os.path.join(os.path.dirname(os.path.abspath(src)), MODEL_CONFIG_FILE)
  if not os.path.exists(saved):
    return None
  with open(saved, encoding='utf-8') as f:
    return json.load(f)


_NO_VARIANT = {'extra_heads': (), 'motion_heads': (), 'regressor_depth': 0}  # plain VideoMAE


def _read_weights(src: str, fmt: str, config):
  """(params, ModelConfig, class names or None) of `read_weights`."""
  if fmt == 'hf':
    sd, hf_cfg = load_hf(src)
    extra, variant = load_hf_extra(src)
    _need_extra(src, hf_cfg, extra)
    classifier = 'classifier.weight' in sd  # the weights decide the model
    try:
      weights_cfg = export.model_config_from_hf(hf_cfg, classifier=classifier, **variant)
    except KeyError as e:
      raise ValueError(f'{src}/config.json: no {e.args[0]!r} (not a VideoMAE config)') from e
    recorded = export.recorded_for_kind(
        {f: getattr(weights_cfg, f) for f in export.ARCH_FIELDS})
    norm_pix = None if classifier else hf_cfg.get('norm_pix_loss')
    model_cfg = export.fit_config(recorded, config, norm_pix)
    names = export.class_names_from_hf(hf_cfg) if classifier else None
    return export.from_hf_state_dict(sd, model_cfg, extra), model_cfg, names
  if fmt != 'videomae':
    raise ValueError(f'format {fmt!r}: choose hf or videomae')
  sd = load_videomae(src)
  recorded, norm_pix, names = export.videomae_recorded_fields(sd), None, None
  recorded.setdefault('num_classes', 0)  # the pretraining layout
  fields = _saved_model_config(src)
  if fields is not None:  # every architecture field
    recorded = {f: fields[f] for f in export.ARCH_FIELDS if f in fields}
    recorded.setdefault('num_classes', 0)  # files written before the classifier existed
    norm_pix = fields.get('norm_pix') if recorded['num_classes'] == 0 else None
    names = fields.get('class_names')
  if recorded['num_classes'] == 0:  # the keys and model_config.json show every variant part
    for field, none in _NO_VARIANT.items():
      recorded.setdefault(field, none)
  model_cfg = export.fit_config(export.recorded_for_kind(recorded), config, norm_pix)
  return export.from_videomae_state_dict(sd, model_cfg), model_cfg, names


def _need_extra(src: str, hf_cfg: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
  """A VideoMAEModel directory is a variant's export only with its mgm_extra files."""
  if _architecture(hf_cfg) == export.HF_ENCODER_ARCHITECTURE and not extra:
    raise FileNotFoundError(
        f'{src}: an HF VideoMAEModel holds only the encoder and there is no '
        f'{export.HF_EXTRA_WEIGHTS} with the rest of a pretraining model (a finetune can start '
        'from the encoder: --config.init)')


def read_weights(src: str, fmt: str, config):
  """(params, ModelConfig of `config.model`) from `src`, after checking that they fit `config`.

  Either model: an HF VideoMAEForPreTraining / VideoMAEForVideoClassification directory, an
  official pretraining / finetune file; a classifier's weights need a classifier config
  (`model.num_classes` = the weights' classes). A pretraining variant: an HF directory with
  mgm_extra.safetensors + mgm_extra.json beside its model file (VideoMAEForPreTraining or
  VideoMAEModel; both files are needed), or an official file with its extra keys; its config
  must ask for the same heads and regressor (`targets.model_config`). What the files record is
  checked by `export.fit_config`: every architecture field for hf (and `norm_pix_loss` for
  pretraining) and for a videomae file with a model_config.json beside it (written by
  `save_videomae`), the shape-recorded fields otherwise (variant parts included). Raises
  export.ConfigMismatchError (naming the fields), KeyError / ValueError (strict keys and
  shapes) or OSError (missing or unreadable files).
  """
  params, model_cfg, _ = _read_weights(src, fmt, config)
  return params, model_cfg


def import_run(src: str, fmt: str, out: str, config, step: int = 0) -> str:
  """Writes the run `out` (config.json + checkpoints/<step>) from `src`; returns `out`.

  `config` (a ConfigDict, e.g. a configs/*.py file's) must fit the weights (`read_weights`).
  `out` must be absent or empty: a run directory holding other checkpoints would be resumed from
  its latest one, not from these weights. The written run is read back and compared bit-exact.
  A classifier's class names (HF id2label, or model_config.json's) go to out/class_names.txt.
  """
  from mgm_jax import inference  # pylint: disable=g-import-not-at-top
  out = os.fspath(out)
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise FileExistsError(f'--out {out} is not an empty directory: the trainer would resume '
                          'from what it holds; choose a new one')
  params, _, names = _read_weights(os.fspath(src), fmt, config)
  inference.save(out, config, params, step=step)
  if names:
    with open(os.path.join(out, CLASS_NAMES_FILE), 'w', encoding='utf-8') as f:
      f.write(''.join(f'{name}\n' for name in names))
  loaded = inference.load(out)
  got = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
  jax.tree.map(np.testing.assert_array_equal, got, params)
  return out


# ---------------------------------------------------------------------------------------------
# A finetune's initial weights (config.init): any of the layouts above, or a run.


def _named(error: Exception, src: str) -> Exception:
  """`error` of the same type with `src` in front of its message (KeyError / ValueError)."""
  message = error_line(error)
  if isinstance(error, export.ConfigMismatchError):
    return export.ConfigMismatchError(f'{src}: {message}')
  return (KeyError if isinstance(error, KeyError) else ValueError)(f'{src}: {message}')


def read_init_weights(src: str | os.PathLike, model_cfg: model_lib.ModelConfig | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
  """The weights a finetune starts from (`config.init`, see `mgm_jax.pretrained`): (params, info).

  `src`: an HF directory (VideoMAEForPreTraining, VideoMAEModel or
  VideoMAEForVideoClassification; a variant's mgm_extra files beside it are not loaded) or an
  official VideoMAE file (.pth/.pt/.bin {"model" | "module": state dict} or .safetensors;
  pretraining or finetune). The layout is read from the keys (`export.detect_style`).

  `params`: `export.backbone_params` of it, a subtree of our classifier's: {"encoder":
  {"patch_embed", "blocks"}} plus "fc_norm" and "head" when the source is a (mean-pooling)
  classifier (with `model_cfg`: its head only if it has as many classes). `info`: {"source",
  "style", "fields" (what the weights' shapes record: widths, depth, tubelet, patch, ...),
  "dropped" ({key: reason} for the parts left out on purpose: decoder, final norm, a head for
  other classes; a variant's heads, regressor and motion decoder, those of an HF export's
  mgm_extra.safetensors as "mgm_extra.safetensors:KEY"), "class_names" (an HF classifier's
  id2label, else None)}.

  `model_cfg`: the config to initialise; a width/depth/patch/tubelet/channel/MLP mismatch is
  an export.ConfigMismatchError naming every field. Every error names `src`.
  """
  src = os.fspath(src)
  info: dict[str, Any] = {'source': src, 'class_names': None}
  try:
    extra = {}
    if os.path.isdir(src):
      sd, hf_cfg = load_hf(src)
      extra, _ = load_hf_extra(src)
      if export.HF_ARCHITECTURES[True] in (hf_cfg.get('architectures') or []):
        info['class_names'] = export.class_names_from_hf(hf_cfg)
    else:
      sd = load_videomae(src)
    style = export.detect_style(sd)
    info.update(style=style, fields=export.backbone_fields(sd, style))
    params, info['dropped'] = export.backbone_params(sd, style, model_cfg)
    info['dropped'].update(export.hf_extra_dropped(extra))
  except (KeyError, ValueError) as e:
    raise _named(e, src) from e
  return params, info
