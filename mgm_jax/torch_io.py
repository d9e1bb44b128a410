"""PyTorch weight files (HF transformers, official VideoMAE) and their numerical check.

Needs the `torch` extra (torch, transformers, safetensors); the name mapping itself is in
`mgm_jax.export`. What the commands launch/export_torch.py and launch/import_torch.py do is
`export_run` + `verify_export` and `import_run` here. Files written:

  HF (`save_hf(dir)`):       dir/config.json, dir/model.safetensors (the key names that
                             transformers' own `save_pretrained` writes); loads with
                             `VideoMAEForPreTraining.from_pretrained(dir)` / `VideoMAEModel...`
                             under transformers 4.x and 5.x.
  VideoMAE (`save_videomae(dir)`): dir/videomae_pretrain.safetensors, dir/videomae_pretrain.pth
                             ({"model": state dict}, tensors only: `torch.load(weights_only=True)`),
                             dir/model_config.json (our ModelConfig: heads, img_size, frames).

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
import numpy as np

from mgm_jax import export
from mgm_jax import masking
from mgm_jax import model as model_lib
from mgm_jax import workdir as workdir_lib

VIDEOMAE_NAME = 'videomae_pretrain'
MODEL_CONFIG_FILE = 'model_config.json'
# What `clear_export_dir` removes: our two layouts' files and every weight/config file name that
# transformers reads for a model (so that no stale weights are left beside a new export).
EXPORT_FILE_PATTERNS = (
    'config.json', 'generation_config.json', 'model.safetensors', 'model.safetensors.index.json',
    'model-*-of-*.safetensors', 'pytorch_model.bin', 'pytorch_model.bin.index.json',
    'pytorch_model-*-of-*.bin', 'tf_model.h5', 'flax_model.msgpack',
    f'{VIDEOMAE_NAME}.safetensors', f'{VIDEOMAE_NAME}.pth', MODEL_CONFIG_FILE)


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


def hf_expected_shapes(hf_config_kwargs: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """Keys and shapes of a freshly built transformers VideoMAEForPreTraining (meta device)."""
  import torch  # pylint: disable=g-import-not-at-top
  tf = _hf_classes()
  # The position tables (Python loops, no parameters) are cheap at 2 frames of 1 patch.
  small = dict(hf_config_kwargs, num_frames=hf_config_kwargs['tubelet_size'],
               image_size=hf_config_kwargs['patch_size'])
  with torch.device('meta'):
    model = tf.VideoMAEForPreTraining(tf.VideoMAEConfig(**small))
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
    raise KeyError(f'transformers {_hf_classes().__version__} VideoMAEForPreTraining: '
                   f'missing keys {missing}; unexpected keys {unexpected}')
  for k, shape in want.items():
    if tuple(sd[k].shape) != shape:
      raise ValueError(f'{k} has shape {tuple(sd[k].shape)}, transformers expects {shape}')


def save_hf(params, model_cfg: model_lib.ModelConfig, norm_pix: bool,
            out_dir: str | os.PathLike, overwrite: bool = False) -> str:
  """Writes config.json + model.safetensors for transformers; returns out_dir.

  The keys are those transformers' `save_pretrained` writes (see `export.to_hf_state_dict`).
  `overwrite`: see `clear_export_dir` (without it, a non-empty out_dir raises).
  """
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  kwargs = export.hf_config(model_cfg, norm_pix)
  sd = export.to_hf_state_dict(params, model_cfg)
  check_hf_state_dict(sd, kwargs)
  out_dir = os.fspath(out_dir)
  clear_export_dir(out_dir, overwrite)
  os.makedirs(out_dir, exist_ok=True)
  _hf_classes().VideoMAEConfig(**kwargs).save_pretrained(out_dir)
  weights = os.path.join(out_dir, 'model.safetensors')
  safetensors.numpy.save_file(sd, weights, metadata={'format': 'pt'})
  _make_readable(weights, os.path.join(out_dir, 'config.json'))
  return out_dir


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
                  norm_pix: bool = True, overwrite: bool = False) -> dict[str, str]:
  """Writes the official-layout state dict as .safetensors and .pth; returns their paths.

  Also writes model_config.json. `overwrite`: see `clear_export_dir`.
  """
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sd = export.to_videomae_state_dict(params)
  out_dir = os.fspath(out_dir)
  clear_export_dir(out_dir, overwrite)
  os.makedirs(out_dir, exist_ok=True)
  paths = {ext: os.path.join(out_dir, f'{VIDEOMAE_NAME}.{ext}')
           for ext in ('safetensors', 'pth')}
  safetensors.numpy.save_file(sd, paths['safetensors'], metadata={'format': 'pt'})
  torch.save({'model': {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, paths['pth'])
  cfg = dict(dataclasses.asdict(model_cfg), norm_pix=bool(norm_pix))
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


def hf_outputs(hf_model, video, mask):
  """The same from a transformers VideoMAEForPreTraining ([B, T, C, H, W] input)."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.from_numpy(np.ascontiguousarray(np.asarray(video).transpose(0, 1, 4, 2, 3)))
  m = torch.from_numpy(np.asarray(mask))
  with torch.no_grad():
    feats = hf_model.videomae(x, bool_masked_pos=m).last_hidden_state
    pred = hf_model(x, bool_masked_pos=m).logits
  return feats.numpy(), pred.numpy()


def compare_with_hf(model: model_lib.MaskedAutoencoder, hf_model, seed: int = 0
                    ) -> dict[str, float]:
  """Max abs differences, ours vs an HF VideoMAEForPreTraining, on one clip + MGM mask.

  Keys: 'features' (encoder, visible tokens), 'predictions' (HF as given, decoder norm eps
  1e-5), 'predictions_eps_matched' (HF decoder norm eps set to ours for the comparison).
  """
  video, mask, num_masked = check_inputs(model.config, seed)
  feats, pred = jax_outputs(model, video, mask, num_masked)
  hf_feats, hf_pred = hf_outputs(hf_model, video, mask)
  norm = hf_model.decoder.norm
  old_eps = norm.eps
  norm.eps = model.config.layer_norm_eps
  try:
    _, hf_pred_matched = hf_outputs(hf_model, video, mask)
  finally:
    norm.eps = old_eps
  return {'features': float(np.abs(feats - hf_feats).max()),
          'predictions': float(np.abs(pred - hf_pred).max()),
          'predictions_eps_matched': float(np.abs(pred - hf_pred_matched).max())}


def hf_model_from_state_dict(sd: Mapping[str, np.ndarray], hf_config_kwargs: Mapping[str, Any]):
  """A transformers VideoMAEForPreTraining holding `sd`, loaded strictly (eval mode)."""
  import torch  # pylint: disable=g-import-not-at-top
  tf = _hf_classes()
  hf = tf.VideoMAEForPreTraining(tf.VideoMAEConfig(**hf_config_kwargs)).eval()
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


def _load_run(workdir: str, step: int | None):
  from mgm_jax import inference  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir {workdir}: no such directory')
  if not os.path.exists(os.path.join(workdir, 'config.json')):
    raise FileNotFoundError(f'--workdir {workdir}: no config.json (not a training run '
                            'directory)')
  config = workdir_lib.read_config(workdir)
  if 'model' not in config:
    raise ValueError(f'{workdir}/config.json has no model section (not a training run config)')
  return inference.load(workdir, step)


def export_run(workdir: str, out: str, fmt: str, step: int | None = None,
               overwrite: bool = False):
  """Writes the weights of run `workdir` (at `step`, default the latest) to `out` as `fmt`.

  Returns (the run as loaded, the files removed from `out`). `overwrite`: see
  `clear_export_dir`; without it a non-empty `out` raises FileExistsError before anything is
  written.
  """
  if fmt not in ('hf', 'videomae'):
    raise ValueError(f'format {fmt!r}: choose hf or videomae')
  run = _load_run(workdir, step)
  params = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
  model_cfg = run.model.config
  norm_pix = bool(run.config.get('loss', {}).get('norm_pix', True))
  removed = clear_export_dir(out, overwrite)
  if fmt == 'hf':
    save_hf(params, model_cfg, norm_pix, out, overwrite=True)
  else:
    save_videomae(params, model_cfg, out, norm_pix, overwrite=True)
  return run, removed


def read_back(out: str, fmt: str, model_cfg: model_lib.ModelConfig, norm_pix: bool):
  """The files `export_run` wrote, loaded into transformers as a VideoMAEForPreTraining.

  hf: `from_pretrained`, failing on any missing, unexpected or mismatched key; videomae: the
  .pth and .safetensors must agree, then strict import and the HF mapping.
  """
  if fmt == 'hf':
    hf, info = _hf_classes().VideoMAEForPreTraining.from_pretrained(
        out, output_loading_info=True)
    bad = {k: sorted(map(str, v)) for k, v in info.items() if v}
    if bad:  # missing / unexpected / mismatched keys or load errors
      raise KeyError(f'transformers did not load {out} cleanly: {bad}')
    return hf.eval()
  sd = load_videomae(os.path.join(out, f'{VIDEOMAE_NAME}.pth'))
  sd_st = load_videomae(os.path.join(out, f'{VIDEOMAE_NAME}.safetensors'))
  for k in sd:
    if not (sd[k] == sd_st[k]).all():
      raise ValueError(f'{k} differs between the .pth and the .safetensors files')
  params = export.from_videomae_state_dict(sd, model_cfg)
  return hf_model_from_state_dict(export.to_hf_state_dict(params, model_cfg),
                                  export.hf_config(model_cfg, norm_pix))


def verify_export(run, out: str, fmt: str) -> dict[str, float]:
  """`compare_with_hf` of the run's model (float32) and the files written to `out`."""
  params = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
  model_cfg = run.model.config
  norm_pix = bool(run.config.get('loss', {}).get('norm_pix', True))
  cfg32 = dataclasses.replace(model_cfg, dtype='float32', attention_impl=None)
  return compare_with_hf(model_lib.from_params(cfg32, params),
                         read_back(out, fmt, model_cfg, norm_pix))


def read_weights(src: str, fmt: str, config):
  """(params, ModelConfig of `config.model`) from `src`, after checking that they fit `config`.

  What the files record is checked by `export.fit_config`: every architecture field for hf (and
  `norm_pix_loss`) and for a videomae file with a model_config.json beside it (written by
  `save_videomae`), the shape-recorded fields otherwise. Raises export.ConfigMismatchError
  (naming the fields), KeyError / ValueError (strict keys and shapes) or OSError (missing or
  unreadable files).
  """
  if fmt == 'hf':
    sd, hf_cfg = load_hf(src)
    try:
      weights_cfg = export.model_config_from_hf(hf_cfg)
    except KeyError as e:
      raise ValueError(f'{src}/config.json: no {e.args[0]!r} (not a VideoMAE config)') from e
    recorded = {f: getattr(weights_cfg, f) for f in export.ARCH_FIELDS}
    model_cfg = export.fit_config(recorded, config, hf_cfg.get('norm_pix_loss'))
    return export.from_hf_state_dict(sd, model_cfg), model_cfg
  if fmt != 'videomae':
    raise ValueError(f'format {fmt!r}: choose hf or videomae')
  sd = load_videomae(src)
  recorded, norm_pix = export.videomae_recorded_fields(sd), None
  saved = os.path.join(os.path.dirname(os.path.abspath(src)), MODEL_CONFIG_FILE)
  if os.path.exists(saved):  # every architecture field
    with open(saved, encoding='utf-8') as f:
      fields = json.load(f)
    norm_pix = fields.get('norm_pix')
    recorded = {f: fields[f] for f in export.ARCH_FIELDS if f in fields}
  model_cfg = export.fit_config(recorded, config, norm_pix)
  return export.from_videomae_state_dict(sd, model_cfg), model_cfg


def import_run(src: str, fmt: str, out: str, config, step: int = 0) -> str:
  """Writes the run `out` (config.json + checkpoints/<step>) from `src`; returns `out`.

  `config` (a ConfigDict, e.g. a configs/*.py file's) must fit the weights (`read_weights`).
  `out` must be absent or empty: a run directory holding other checkpoints would be resumed from
  its latest one, not from these weights. The written run is read back and compared bit-exact.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from mgm_jax import inference  # pylint: disable=g-import-not-at-top
  out = os.fspath(out)
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise FileExistsError(f'--out {out} is not an empty directory: the trainer would resume '
                          'from what it holds; choose a new one')
  params, _ = read_weights(os.fspath(src), fmt, config)
  inference.save(out, config, params, step=step)
  loaded = inference.load(out)
  got = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
  jax.tree.map(np.testing.assert_array_equal, got, params)
  return out
