r"""Exports a run's weights to PyTorch: HF transformers or the official VideoMAE layout.

    python launch/export_torch.py --workdir DIR [--step N] --out OUT --format hf|videomae

  hf:       OUT/config.json + OUT/model.safetensors, for
            `transformers.VideoMAEForPreTraining.from_pretrained(OUT)` (or `VideoMAEModel`).
  videomae: OUT/videomae_pretrain.{safetensors,pth} with MCG-NJU VideoMAE's pretraining names
            (the .pth holds {"model": state dict}), plus OUT/model_config.json.

By default the export is checked: the written files are read back into transformers and one clip
with an MGM mask goes through both frameworks (float32); the max abs differences of the encoder
features and of the masked-token predictions are printed, and the command fails above
--tolerance. `--no-verify` skips this. HF's decoder LayerNorm eps is fixed at 1e-5 (ours and
VideoMAE's: 1e-6): the check prints the prediction difference this causes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from flax import nnx

from mgm_jax import export
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import torch_io


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='the training run directory')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: latest)')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--format', required=True, choices=('hf', 'videomae'))
  parser.add_argument('--no-verify', dest='verify', action='store_false',
                      help='skip the numerical check')
  parser.add_argument('--tolerance', type=float, default=1e-3,
                      help='largest max abs difference the check accepts')
  return parser.parse_args(argv)


def _hf_model(args, model_cfg, norm_pix):
  """The exported weights, read back from the written files into transformers."""
  import transformers  # pylint: disable=g-import-not-at-top
  if args.format == 'hf':
    hf, info = transformers.VideoMAEForPreTraining.from_pretrained(
        args.out, output_loading_info=True)
    bad = {k: sorted(map(str, v)) for k, v in info.items() if v}
    if bad:  # missing / unexpected / mismatched keys or load errors
      raise KeyError(f'transformers did not load {args.out} cleanly: {bad}')
    return hf.eval()
  sd = torch_io.load_videomae(f'{args.out}/{torch_io.VIDEOMAE_NAME}.pth')
  sd_st = torch_io.load_videomae(f'{args.out}/{torch_io.VIDEOMAE_NAME}.safetensors')
  for k in sd:
    if not (sd[k] == sd_st[k]).all():
      raise ValueError(f'{k} differs between the .pth and the .safetensors files')
  params = export.from_videomae_state_dict(sd, model_cfg)
  return torch_io.hf_model_from_state_dict(export.to_hf_state_dict(params, model_cfg),
                                           export.hf_config(model_cfg, norm_pix))


def main(argv=None) -> int:
  args = _parse_args(argv)
  run = inference.load(args.workdir, args.step)
  params = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
  model_cfg = run.model.config
  norm_pix = bool(run.config.get('loss', {}).get('norm_pix', True))
  if args.format == 'hf':
    torch_io.save_hf(params, model_cfg, norm_pix, args.out)
  else:
    torch_io.save_videomae(params, model_cfg, args.out, norm_pix)
  print(f'step {run.step} of {args.workdir} -> {args.out} ({args.format})')
  if not args.verify:
    return 0
  cfg32 = dataclasses.replace(model_cfg, dtype='float32', attention_impl=None)
  diffs = torch_io.compare_with_hf(model_lib.from_params(cfg32, params),
                                   _hf_model(args, model_cfg, norm_pix))
  print(f'max abs difference vs transformers: encoder features {diffs["features"]:.3g}, '
        f'predictions {diffs["predictions_eps_matched"]:.3g} (decoder norm eps matched), '
        f'{diffs["predictions"]:.3g} (as loaded: HF decoder norm eps '
        f'{export.HF_DECODER_NORM_EPS:g} vs ours {model_cfg.layer_norm_eps:g})')
  worst = max(diffs['features'], diffs['predictions_eps_matched'])
  if worst > args.tolerance:
    print(f'FAILED: difference {worst:.3g} > tolerance {args.tolerance:g}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
