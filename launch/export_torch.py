r"""Exports a run's weights to PyTorch: HF transformers or the official VideoMAE layout.

    python launch/export_torch.py --workdir DIR [--step N] --out OUT --format hf|videomae \
        [--overwrite] [--noverify] [--tolerance T] [--class_names FILE] [--weights auto]

The run's config decides the model: a pretraining run (model.num_classes = 0) exports the
autoencoder, a finetuning run (num_classes > 0) the classifier.

  hf:       OUT/config.json + OUT/model.safetensors, for
            `transformers.VideoMAEForPreTraining.from_pretrained(OUT)` (or `VideoMAEModel`),
            or `transformers.VideoMAEForVideoClassification.from_pretrained(OUT)` (use_mean_pooling,
            id2label from the class names), under transformers 4.x and 5.x: the key names are
            those `save_pretrained` writes. A pretraining variant (mgm_jax/model.py: extra heads,
            MAM2's regressor and motion decoder) adds OUT/mgm_extra.safetensors (the parts no HF
            class has, official-style names) + OUT/mgm_extra.json (its heads and regressor
            depth); with a regressor or motion decoder the HF class is `VideoMAEModel` (the
            encoder and its final norm), with extra heads only `VideoMAEForPreTraining`.
  videomae: OUT/videomae_pretrain.{safetensors,pth} with MCG-NJU VideoMAE's pretraining names,
            or OUT/videomae_finetune.{safetensors,pth} with its finetuning names (what its
            `run_class_finetuning.py --finetune` / `--eval` load); the .pth holds
            {"model": state dict}; plus OUT/model_config.json. A variant's parts are in the
            same file under official-style names (`decoder.heads.<name>.*`, `motion_decoder.*`,
            `regressor.*`: see mgm_jax/export.py); VideoMAE's `--finetune` reads only `encoder.*`.

Class names (classifier): --class_names FILE (one name a line), else the run's
class_names.txt, else class_<i>. --weights: auto (the EMA when the run keeps one, else the
params), params or ema.

OUT must be empty or absent. `--overwrite` first removes the weight and config files of either
layout that OUT holds (and prints their names; other files stay), so that no stale weights are
left beside the new ones.

By default the export is checked: the written files are read back into transformers (HF:
`from_pretrained`, which must report no missing or unexpected key; videomae: the strict import
of the .pth, then the HF mapping) and one random clip goes through both frameworks (float32).

  autoencoder  with an MGM mask, the max abs differences of the encoder features and of the
               masked-token pixel predictions (VideoMAEForPreTraining); HF's decoder LayerNorm
               eps is fixed at 1e-5 (ours and VideoMAE's: 1e-6) and the check prints the
               difference this causes. A variant with extra heads only is checked the same way.
  variant with a regressor or motion decoder (HF: VideoMAEModel): the encoder features on the
               visible tokens under the MGM mask and on every token (HF computes nothing else).
  classifier   the max abs difference of the logits (HF's fc_norm eps set to ours for the
               check; also printed as loaded, HF fixes it at 1e-5).

Every model's files are also read back into our params (mgm_extra.safetensors included), which
must equal the run's bit for bit: the check of the parts no HF class computes (a variant's heads,
regressor, decoders). The command fails above --tolerance (default 1e-3 for the autoencoder,
1e-4 for the classifier) or on any difference of the weights. `--noverify` skips this.

Expected failures (no run or checkpoint in --workdir, a non-empty OUT, a failed check) print one
line to stderr and exit 1.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from mgm_jax import export
from mgm_jax import inference
from mgm_jax import torch_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run directory.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_OUT = flags.DEFINE_string('out', None, 'Output directory (empty or absent, or --overwrite).')
_FORMAT = flags.DEFINE_enum('format', None, ['hf', 'videomae'], 'Layout to write.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Remove weight/config files already in --out.')
_VERIFY = flags.DEFINE_bool('verify', True, 'Read the files back and compare numbers.')
_TOLERANCE = flags.DEFINE_float('tolerance', None, 'Largest max abs difference the check accepts '
                                '(default 1e-3 autoencoder, 1e-4 classifier).')
_CLASS_NAMES = flags.DEFINE_string('class_names', None, 'Classifier: a file with one class name '
                                   'a line (default: the run\'s class_names.txt, else class_<i>).')
_WEIGHTS = flags.DEFINE_enum('weights', 'auto', list(inference.WEIGHTS),
                             'auto: the EMA if the run keeps one, else the params.')


def _fail(message: str) -> None:
  sys.exit(f'export_torch: error: {message}')


def _read_names(path: str | None) -> list[str] | None:
  if path is None:
    return None
  with open(path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f if line.strip()]


def _kind(cfg) -> str:
  """The exported model in words: the classifier, or the autoencoder and its variant parts."""
  if cfg.num_classes:
    return f'classifier, {cfg.num_classes} classes'
  parts = [f'heads {", ".join(n for n, _ in cfg.extra_heads)}'] if cfg.extra_heads else []
  if cfg.motion_heads:
    parts.append(f'motion decoder ({", ".join(n for n, _ in cfg.motion_heads)})')
  if cfg.regressor_depth:
    parts.append(f'regressor depth {cfg.regressor_depth}')
  return 'autoencoder' + (f' + {"; ".join(parts)}' if parts else '')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs its internals at INFO
  out, fmt = _OUT.value, _FORMAT.value
  try:
    run, removed = torch_io.export_run(_WORKDIR.value, out, fmt, _STEP.value, _OVERWRITE.value,
                                       _read_names(_CLASS_NAMES.value), _WEIGHTS.value)
  except torch_io.EXPECTED_ERRORS as e:
    _fail(torch_io.error_line(e))
  if removed:
    print(f'--overwrite: removed {", ".join(removed)} from {out}')
  cfg = run.model.config
  print(f'step {run.step} of {_WORKDIR.value} -> {out} ({fmt}, {_kind(cfg)})')
  if not _VERIFY.value:
    return
  try:
    diffs = torch_io.verify_export(run, out, fmt)
  except torch_io.EXPECTED_ERRORS as e:
    _fail(f'the written files do not load: {torch_io.error_line(e)}')
  if 'features_all' in diffs:
    print(f'max abs difference vs transformers {export.HF_ENCODER_ARCHITECTURE}: encoder '
          f'features {diffs["features"]:.3g}, {diffs["features_all"]:.3g} (every token); HF has '
          'no module for its decoder(s), regressor and heads (checked by the read-back below)')
  elif 'logits' in diffs:
    print(f'max abs difference vs transformers: logits {diffs["logits"]:.3g} (fc_norm eps '
          f'matched), {diffs["logits_as_loaded"]:.3g} (as loaded: HF fc_norm eps '
          f'{export.HF_FC_NORM_EPS:g} vs ours {cfg.layer_norm_eps:g}); encoder features '
          f'{diffs["features"]:.3g}')
  else:
    print(f'max abs difference vs transformers: encoder features {diffs["features"]:.3g}, '
          f'predictions {diffs["predictions_eps_matched"]:.3g} (decoder norm eps matched), '
          f'{diffs["predictions"]:.3g} (as loaded: HF decoder norm eps '
          f'{export.HF_DECODER_NORM_EPS:g} vs ours {cfg.layer_norm_eps:g})')
  print(f'weights read back from {out}: max abs difference {diffs["weights"]:.3g} over every '
        'parameter')
  if diffs['weights'] != 0:
    _fail(f'the weights read back differ from the run\'s by {diffs["weights"]:.3g}: they must '
          'be bit-exact')
  tolerance = _TOLERANCE.value
  if tolerance is None:
    tolerance = 1e-4 if cfg.num_classes else 1e-3
  worst = torch_io.checked_difference(diffs)
  if worst > tolerance:
    _fail(f'difference {worst:.3g} > tolerance {tolerance:g}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'out', 'format'])
  app.run(main)
