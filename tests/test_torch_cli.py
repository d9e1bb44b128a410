"""The command lines launch/export_torch.py and launch/import_torch.py, run as the user runs them.

Expected failures must end in one clear stderr line (no traceback) and a non-zero exit; a
successful export and import print what they did. Each test starts a Python process (~10 s of
imports), so the cases are few; the logic behind them is tested in test_export.py.
"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from mgm_jax import export
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import schema
from mgm_jax import torch_io

pytest.importorskip('torch')
pytest.importorskip('transformers')

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cli(script, *args):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, f'launch/{script}.py', *map(str, args)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600, check=False)


def _params(cfg, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32),
                      export.abstract_params(cfg))


def _assert_one_line_error(result, script, *parts):
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode != 0, result.stdout + result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  assert lines and lines[-1].startswith(f'{script}: error: '), result.stderr
  for part in parts:
    assert part in lines[-1], lines[-1]


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A demo-config run (tiny model, 8 x 96 px) at step 3, as the trainer would leave it."""
  config = schema.load('configs/demo.py')
  workdir = tmp_path_factory.mktemp('cli') / 'run'
  inference.save(workdir, config, _params(model_lib.model_config_from(config.model)), step=3)
  return workdir


def test_export_overwrite_then_import_round_trip(run_dir, tmp_path):
  out = tmp_path / 'hf'
  out.mkdir()
  (out / 'pytorch_model.bin').write_bytes(b'stale')  # an earlier export's weights
  result = _cli('export_torch', '--workdir', run_dir, '--out', out, '--format', 'hf',
                '--overwrite')
  assert result.returncode == 0, result.stderr
  assert f'--overwrite: removed pytorch_model.bin from {out}' in result.stdout
  assert 'step 3' in result.stdout and 'encoder features' in result.stdout
  assert float(result.stdout.split('encoder features ')[1].split(',')[0]) < 1e-4
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors']

  result = _cli('import_torch', '--src', out, '--format', 'hf', '--out', tmp_path / 'back',
                '--config', 'configs/demo.py')
  assert result.returncode == 0, result.stderr
  assert (f'train: python launch/main.py --config=configs/demo.py '
          f'--workdir={tmp_path / "back"}') in result.stdout
  assert inference.load(tmp_path / 'back').step == 0


def test_export_errors_are_one_line(run_dir, tmp_path):
  _assert_one_line_error(
      _cli('export_torch', '--workdir', tmp_path / 'nope', '--out', tmp_path / 'x', '--format',
           'hf'), 'export_torch', f'--workdir {tmp_path / "nope"}: no such directory')
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'model.safetensors').write_bytes(b'old')
  _assert_one_line_error(
      _cli('export_torch', '--workdir', run_dir, '--out', tmp_path / 'full', '--format',
           'videomae'), 'export_torch', 'is not empty (model.safetensors)', '--overwrite')
  assert os.listdir(tmp_path / 'full') == ['model.safetensors']


def test_import_errors_are_one_line(tmp_path):
  _assert_one_line_error(
      _cli('import_torch', '--src', tmp_path / 'nope', '--format', 'hf', '--out',
           tmp_path / 'a', '--config', 'configs/demo.py'),
      'import_torch', f'{tmp_path / "nope"}: no such directory')
  wide = model_lib.model_config('tiny', num_frames=8, img_size=(32, 48))
  torch_io.save_hf(_params(wide), wide, False, tmp_path / 'wide')
  _assert_one_line_error(
      _cli('import_torch', '--src', tmp_path / 'wide', '--format', 'hf', '--out',
           tmp_path / 'b', '--config', 'configs/demo.py'),
      'import_torch', 'img_size (32, 48): the trainer needs square clips')
  tiny = model_lib.model_config('tiny', num_frames=8, img_size=(96, 96))
  torch_io.save_hf(_params(tiny), tiny, True, tmp_path / 'tiny')
  _assert_one_line_error(
      _cli('import_torch', '--src', tmp_path / 'tiny', '--format', 'hf', '--out',
           tmp_path / 'c', '--config', 'configs/ssv2.py'),
      'import_torch', "the weights have encoder_dim 128 but --config's model.size='B' gives 768",
      'pass --config.model.size=tiny --config.model.img_size=96 --config.model.num_frames=8')
  assert not any((tmp_path / d).exists() for d in 'abc')


def test_classifier_export_prints_the_logits_difference(tmp_path):
  """A finetuning run (model.num_classes > 0) exports as VideoMAEForVideoClassification."""
  config = schema.load('configs/demo.py')
  config.model.num_classes = 3
  inference.save(tmp_path / 'run', config, _params(model_lib.model_config_from(config.model)))
  names = tmp_path / 'names.txt'
  names.write_text('up\ndown\nstill\n')
  out = tmp_path / 'hf'
  result = _cli('export_torch', '--workdir', tmp_path / 'run', '--out', out, '--format', 'hf',
                '--class_names', names)
  assert result.returncode == 0, result.stderr
  assert 'classifier, 3 classes' in result.stdout
  assert float(result.stdout.split('logits ')[1].split(' ')[0]) < 1e-4
  config_json = (out / 'config.json').read_text()
  assert '"VideoMAEForVideoClassification"' in config_json and '"down"' in config_json
  names.write_text('up\ndown\n')
  _assert_one_line_error(
      _cli('export_torch', '--workdir', tmp_path / 'run', '--out', tmp_path / 'x', '--format',
           'videomae', '--class_names', names),
      'export_torch', '2 class names for model.num_classes = 3')
