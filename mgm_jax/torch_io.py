"""PyTorch weight files (HF transformers, official VideoMAE) and their numerical check.

Needs the `torch` extra (torch, transformers, safetensors); the name mapping itself is in
`mgm_jax.export`. Files written:

  HF (`save_hf(dir)`):       dir/config.json, dir/model.safetensors; loads with
                             `VideoMAEForPreTraining.from_pretrained(dir)` / `VideoMAEModel...`.
  VideoMAE (`save_videomae(dir)`): dir/videomae_pretrain.safetensors, dir/videomae_pretrain.pth
                             ({"model": state dict}, tensors only: `torch.load(weights_only=True)`),
                             dir/model_config.json (our ModelConfig: heads, img_size, frames).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from flax import nnx
import numpy as np

from mgm_jax import export
from mgm_jax import masking
from mgm_jax import model as model_lib

VIDEOMAE_NAME = 'videomae_pretrain'
MODEL_CONFIG_FILE = 'model_config.json'


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


def check_hf_state_dict(sd: Mapping[str, Any], hf_config_kwargs: Mapping[str, Any]) -> None:
  """Raises KeyError/ValueError naming any key the installed transformers would not load."""
  want = hf_expected_shapes(hf_config_kwargs)
  missing, unexpected = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
  if missing or unexpected:
    raise KeyError(f'transformers {_hf_classes().__version__} VideoMAEForPreTraining: '
                   f'missing keys {missing}; unexpected keys {unexpected}')
  for k, shape in want.items():
    if tuple(sd[k].shape) != shape:
      raise ValueError(f'{k} has shape {tuple(sd[k].shape)}, transformers expects {shape}')


def save_hf(params, model_cfg: model_lib.ModelConfig, norm_pix: bool,
            out_dir: str | os.PathLike) -> str:
  """Writes config.json + model.safetensors for transformers; returns out_dir."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  kwargs = export.hf_config(model_cfg, norm_pix)
  sd = export.to_hf_state_dict(params, model_cfg)
  check_hf_state_dict(sd, kwargs)
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  _hf_classes().VideoMAEConfig(**kwargs).save_pretrained(out_dir)
  safetensors.numpy.save_file(sd, os.path.join(out_dir, 'model.safetensors'),
                              metadata={'format': 'pt'})
  return out_dir


def load_hf(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(state dict, config dict) of an HF VideoMAE directory (model.safetensors or .bin)."""
  src = os.fspath(src)
  with open(os.path.join(src, 'config.json'), encoding='utf-8') as f:
    config = json.load(f)
  path = os.path.join(src, 'model.safetensors')
  if os.path.exists(path):
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    return dict(safetensors.numpy.load_file(path)), config
  return _torch_load(os.path.join(src, 'pytorch_model.bin')), config


def _torch_load(path: str) -> dict[str, Any]:
  import torch  # pylint: disable=g-import-not-at-top
  return torch.load(path, map_location='cpu', weights_only=True)


def save_videomae(params, model_cfg: model_lib.ModelConfig, out_dir: str | os.PathLike,
                  norm_pix: bool = True) -> dict[str, str]:
  """Writes the official-layout state dict as .safetensors and .pth; returns their paths."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sd = export.to_videomae_state_dict(params)
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  paths = {ext: os.path.join(out_dir, f'{VIDEOMAE_NAME}.{ext}')
           for ext in ('safetensors', 'pth')}
  safetensors.numpy.save_file(sd, paths['safetensors'], metadata={'format': 'pt'})
  torch.save({'model': {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, paths['pth'])
  cfg = dict(dataclasses.asdict(model_cfg), norm_pix=bool(norm_pix))
  with open(os.path.join(out_dir, MODEL_CONFIG_FILE), 'w', encoding='utf-8') as f:
    json.dump(cfg, f, indent=2)
  return paths


def load_videomae(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """An official-layout state dict from .safetensors or a .pth/.pt ({'model'|'module': sd})."""
  path = os.fspath(path)
  if path.endswith('.safetensors'):
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    return dict(safetensors.numpy.load_file(path))
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
  hf.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
  return hf
