r"""Exports a run's weights to PyTorch: HF transformers or the official VideoMAE layout.

    python launch/export_torch.py --workdir DIR [--step N] --out OUT --format hf|videomae \
        [--overwrite] [--noverify] [--tolerance 1e-3]

  hf:       OUT/config.json + OUT/model.safetensors, for
            `transformers.VideoMAEForPreTraining.from_pretrained(OUT)` (or `VideoMAEModel`),
            under transformers 4.x and 5.x: the key names are those `save_pretrained` writes.
  videomae: OUT/videomae_pretrain.{safetensors,pth} with MCG-NJU VideoMAE's pretraining names
            (the .pth holds {"model": state dict}), plus OUT/model_config.json.

OUT must be empty or absent. `--overwrite` first removes the weight and config files of either
layout that OUT holds (and prints their names; other files stay), so that no stale weights are
left beside the new ones.

By default the export is checked: the written files are read back into transformers and one clip
with an MGM mask goes through both frameworks (float32); the max abs differences of the encoder
features and of the masked-token predictions are printed, and the command fails above
--tolerance. `--noverify` skips this. HF's decoder LayerNorm eps is fixed at 1e-5 (ours and
VideoMAE's: 1e-6): the check prints the prediction difference this causes.

Expected failures (no run or checkpoint in --workdir, a non-empty OUT, a failed check) print one
line to stderr and exit 1.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from mgm_jax import export
from mgm_jax import torch_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run directory.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_OUT = flags.DEFINE_string('out', None, 'Output directory (empty or absent, or --overwrite).')
_FORMAT = flags.DEFINE_enum('format', None, ['hf', 'videomae'], 'Layout to write.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Remove weight/config files already in --out.')
_VERIFY = flags.DEFINE_bool('verify', True, 'Read the files back and compare numbers.')
_TOLERANCE = flags.DEFINE_float('tolerance', 1e-3,
                                'Largest max abs difference the check accepts.')


def _fail(message: str) -> None:
  sys.exit(f'export_torch: error: {message}')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs its internals at INFO
  out, fmt = _OUT.value, _FORMAT.value
  try:
    run, removed = torch_io.export_run(_WORKDIR.value, out, fmt, _STEP.value, _OVERWRITE.value)
  except torch_io.EXPECTED_ERRORS as e:
    _fail(torch_io.error_line(e))
  if removed:
    print(f'--overwrite: removed {", ".join(removed)} from {out}')
  print(f'step {run.step} of {_WORKDIR.value} -> {out} ({fmt})')
  if not _VERIFY.value:
    return
  try:
    diffs = torch_io.verify_export(run, out, fmt)
  except torch_io.EXPECTED_ERRORS as e:
    _fail(f'the written files do not load: {torch_io.error_line(e)}')
  print(f'max abs difference vs transformers: encoder features {diffs["features"]:.3g}, '
        f'predictions {diffs["predictions_eps_matched"]:.3g} (decoder norm eps matched), '
        f'{diffs["predictions"]:.3g} (as loaded: HF decoder norm eps '
        f'{export.HF_DECODER_NORM_EPS:g} vs ours {run.model.config.layer_norm_eps:g})')
  worst = max(diffs['features'], diffs['predictions_eps_matched'])
  if worst > _TOLERANCE.value:
    _fail(f'difference {worst:.3g} > tolerance {_TOLERANCE.value:g}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'out', 'format'])
  app.run(main)
