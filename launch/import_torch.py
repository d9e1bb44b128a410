r"""Imports PyTorch VideoMAE weights as a run the trainer can start from.

    python launch/import_torch.py --src PATH --format hf|videomae --out DIR \
        --config configs/ssv2.py[:ARG] [--config.model.size=S ...] [--step 0]

  hf:       PATH is a transformers VideoMAEForPreTraining directory (config.json + weights),
            or a VideoMAEForVideoClassification one (use_mean_pooling=True), e.g. a released
            VideoMAE finetuned model.
  videomae: PATH is an official pretraining or finetuning checkpoint (.pth {"model" |
            "module": ...} or .safetensors; modeling_finetune.py's names with mean pooling).

A classifier's weights need a classifier config (model.num_classes = their classes, e.g. a
configs/*_finetune.py); its class names (HF id2label) are written to DIR/class_names.txt, and
`launch/evaluate.py --workdir DIR` evaluates the imported model. (To start a finetune from
pretraining weights, use the finetune config's --config.init=PATH instead.)

`--config` (with any `--config.*` overrides, as launch/main.py takes them) is the run to start:
its model section must describe the weights. What the weights' files record (every architecture
field for hf and for a videomae file with export_torch.py's model_config.json beside it; widths,
depths, tubelet and patch otherwise) is checked against it, and so is `loss.norm_pix` where the
files record the target; heads, frames and image size that the files do not record come from the
config. A mismatch is an error naming every field, with the overrides that would fit.

Writes DIR (which must be empty or absent)/config.json and DIR/checkpoints/<step> with a freshly
initialised optimizer, reads them back bit-exact, and prints the launch/main.py command that
trains from there (the same --config and overrides: the trainer resumes from DIR's checkpoint).
Expected failures (unreadable --src, mismatched config, non-empty --out) print one line to
stderr and exit 1.
"""

from __future__ import annotations

import shlex
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mgm_jax import torch_io

_SRC = flags.DEFINE_string('src', None, 'HF model directory or official .pth/.safetensors file '
                           '(pretraining or finetuning).')
_FORMAT = flags.DEFINE_enum('format', None, ['hf', 'videomae'], 'Layout of --src.')
_OUT = flags.DEFINE_string('out', None, 'Run directory to write (empty or absent).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]) of '
                                          'the run to start; its model must fit the weights.',
                                          lock_config=True)
_STEP = flags.DEFINE_integer('step', 0, 'Step of the written checkpoint.')


def train_command(out: str) -> str:
  """The launch/main.py command line that trains from `out` with this invocation's config."""
  spec = config_flags.get_config_filename(flags.FLAGS['config'])
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  args = [f'--config={spec}'] + [f'--config.{k}={v}' for k, v in overrides.items()]
  return f'python launch/main.py {" ".join(shlex.quote(a) for a in args)} ' \
         f'--workdir={shlex.quote(out)}'


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs its internals at INFO
  try:
    torch_io.import_run(_SRC.value, _FORMAT.value, _OUT.value, _CONFIG.value, _STEP.value)
  except torch_io.EXPECTED_ERRORS as e:
    sys.exit(f'import_torch: error: {torch_io.error_line(e)}')
  print(f'{_SRC.value} ({_FORMAT.value}) -> {_OUT.value}/checkpoints/{_STEP.value} '
        '(params read back bit-exact)')
  print(f'train: {train_command(_OUT.value)} ...')


if __name__ == '__main__':
  flags.mark_flags_as_required(['src', 'format', 'out', 'config'])
  app.run(main)
