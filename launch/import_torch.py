r"""Imports PyTorch VideoMAE weights as a run the trainer can start from.

    python launch/import_torch.py --src PATH --format hf|videomae --out DIR \
        [--config configs/ssv2.py[:ARG]] [--img_size 224 --num_frames 16 \
         --encoder_heads H --decoder_heads H]

  hf:       PATH is a transformers VideoMAEForPreTraining directory (config.json + weights).
  videomae: PATH is an official pretraining checkpoint (.pth {"model": ...} or .safetensors).
            Heads, frames and image size are not in the weights: they come from a
            model_config.json beside PATH (written by export_torch.py), else from the flags,
            else from the preset of the encoder width (frames 16, 224 px).

Writes DIR/config.json (the --config file's config, `model` set to the imported architecture)
and DIR/checkpoints/<step> with a freshly initialised optimizer. Train from it with
`python launch/main.py --config=<same config> --config.model.size=<printed> --workdir=DIR ...`:
the trainer resumes from the latest checkpoint in its workdir.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import jax
import numpy as np

from mgm_jax import export
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import torch_io


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--src', required=True)
  parser.add_argument('--format', required=True, choices=('hf', 'videomae'))
  parser.add_argument('--out', required=True, help='run directory to write')
  parser.add_argument('--config', default='configs/ssv2.py', help='base config file[:arg]')
  parser.add_argument('--step', type=int, default=0, help='step of the written checkpoint')
  for name in ('img_size', 'num_frames', 'encoder_heads', 'decoder_heads'):
    parser.add_argument(f'--{name}', type=int, default=None)
  return parser.parse_args(argv)


def load_config(spec: str):
  """`path.py[:arg]` -> that file's get_config(arg)."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('base_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _flag(value) -> str:
  if isinstance(value, (list, tuple)) and len(set(value)) == 1:
    return str(value[0])
  return str(value)


def read_weights(args):
  """(params, ModelConfig, norm_pix or None) from --src."""
  overrides = {k: getattr(args, k) for k in ('num_frames', 'encoder_heads', 'decoder_heads')
               if getattr(args, k) is not None}
  if args.img_size is not None:
    overrides['img_size'] = (args.img_size, args.img_size)
  if args.format == 'hf':
    sd, hf_cfg = torch_io.load_hf(args.src)
    model_cfg = export.model_config_from_hf(hf_cfg, **overrides)
    return export.from_hf_state_dict(sd, model_cfg), model_cfg, hf_cfg.get('norm_pix_loss')
  sd = torch_io.load_videomae(args.src)
  saved = os.path.join(os.path.dirname(os.path.abspath(args.src)), torch_io.MODEL_CONFIG_FILE)
  norm_pix = None
  if os.path.exists(saved):
    with open(saved, encoding='utf-8') as f:
      fields = json.load(f)
    norm_pix = fields.pop('norm_pix', None)
    model_cfg = model_lib.ModelConfig(**{**fields, **overrides})
  else:
    model_cfg = export.model_config_from_videomae(sd, **overrides)
  return export.from_videomae_state_dict(sd, model_cfg), model_cfg, norm_pix


def main(argv=None) -> int:
  args = _parse_args(argv)
  params, model_cfg, norm_pix = read_weights(args)
  config = load_config(args.config)
  config.model.update(export.preset_config(model_cfg))
  if norm_pix is not None:
    config.loss.norm_pix = bool(norm_pix)
  built = model_lib.model_config_from(config.model)
  arch = ('img_size', 'num_frames', 'tubelet', 'patch', 'in_chans', 'encoder_dim',
          'encoder_depth', 'encoder_heads', 'decoder_dim', 'decoder_depth', 'decoder_heads',
          'mlp_ratio', 'layer_norm_eps')
  wrong = [f for f in arch if getattr(built, f) != getattr(model_cfg, f)]
  if wrong:
    raise ValueError(f'config.model does not rebuild the imported architecture: {wrong}')
  inference.save(args.out, config, params, step=args.step)
  loaded = inference.load(args.out)  # read back: bit-exact
  from flax import nnx  # pylint: disable=g-import-not-at-top
  got = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
  jax.tree.map(np.testing.assert_array_equal, got, params)
  print(f'{args.src} ({args.format}) -> {args.out}/checkpoints/{args.step} '
        f'(params read back bit-exact)')
  print(f'config.model = {dict(config.model)}; loss.norm_pix = {config.loss.norm_pix}')
  if len(export.preset_config(model_cfg)) > 5:
    print('NOTE: no preset size matches; launch/main.py needs a config file with these '
          'config.model fields.')
  base = load_config(args.config)
  flags = [f'--config.{k}={_flag(v)}' for k, v in
           [(f'model.{k}', v) for k, v in config.model.items()] + [
               ('loss.norm_pix', config.loss.norm_pix)]
           if base.get(k.split('.')[0]).get(k.split('.')[1]) != v]
  print(f'train: python launch/main.py --config={args.config} {" ".join(flags)} '
        f'--workdir={args.out} ...')
  return 0


if __name__ == '__main__':
  sys.exit(main())
