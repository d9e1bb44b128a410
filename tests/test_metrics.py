"""Tests for mgm_jax.metrics and mgm_jax.reconstruct."""

import glob
import json
import math
import os

import numpy as np
from PIL import Image
import pytest

from mgm_jax import loss as loss_lib
from mgm_jax import metrics
from mgm_jax import reconstruct


def test_writer_writes_jsonl_tensorboard_and_png(tmp_path):
  writer = metrics.MetricsWriter(tmp_path, total_steps=10, enabled=True)
  writer.write(1, {'loss': np.float32(0.5), 'lr': 1e-4})
  writer.write(2, {'loss': np.array(0.25), 'grad_norm': float('nan')})
  image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  path = writer.write_image(2, 'recon', image)
  writer.progress(1, {'loss': 0.5}, clips_per_s=3.0)
  line = writer.progress(3, {'loss': 0.25}, clips_per_s=4.0)
  writer.close()

  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert rows[0] == {'step': 1, 'loss': 0.5, 'lr': 1e-4}
  assert rows[1]['step'] == 2 and rows[1]['loss'] == 0.25 and math.isnan(rows[1]['grad_norm'])
  assert glob.glob(str(tmp_path / 'tb' / 'events.out.tfevents.*'))
  assert path == str(tmp_path / 'images' / 'recon_000002.png')
  np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
  assert 'step 3/10' in line and 'clips/s' in line and 'eta 0:00:' in line


def test_writer_disabled_is_a_no_op(tmp_path):
  writer = metrics.MetricsWriter(tmp_path / 'run', total_steps=10, enabled=False)
  writer.write(1, {'loss': 1.0})
  assert writer.write_image(1, 'x', np.zeros((4, 4, 3), np.uint8)) is None
  assert writer.progress(1, {'loss': 1.0}, 1.0) is None
  writer.close()
  assert not os.path.exists(tmp_path / 'run')


def _clip(rng, t=4, h=32, w=48):
  """A smooth-ish clip with texture so that every patch has a non-zero std."""
  return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('norm_pix', [True, False])
def test_perfect_prediction_reproduces_the_clip(norm_pix):
  rng = np.random.default_rng(0)
  frames = _clip(rng)
  tubelet, patch = 2, 16
  mask = rng.random((2, 2, 3)) < 0.6
  target = np.asarray(loss_lib.reconstruction_target(frames[None] / 255.0, tubelet, patch,
                                                     norm_pix=norm_pix))[0]
  pred = target[mask.reshape(-1)]
  video = reconstruct.reconstruct_video(frames, mask, pred, tubelet=tubelet, patch=patch,
                                        norm_pix=norm_pix)
  assert video.dtype == np.uint8 and video.shape == frames.shape
  assert np.abs(video.astype(int) - frames).max() <= 1

  panel = reconstruct.reconstruction_panel(frames, mask, pred, tubelet=tubelet, patch=patch,
                                           norm_pix=norm_pix, num_frames=4)
  sep = 2
  assert panel.dtype == np.uint8
  assert panel.shape == (3 * 32 + 2 * sep, 4 * 48 + 3 * sep, 3)
  for row in (0, 2):  # Original and reconstruction rows: frame k at column k * (48 + sep).
    for k in range(4):
      tile = panel[row * (32 + sep):row * (32 + sep) + 32, k * (48 + sep):k * (48 + sep) + 48]
      assert np.abs(tile.astype(int) - frames[k]).max() <= 1


def test_masked_row_greys_masked_tubelets():
  rng = np.random.default_rng(1)
  frames = _clip(rng)
  mask = np.zeros((2, 2, 3), bool)
  mask[1, 0, 2] = True
  masked = reconstruct.masked_video(frames, mask, tubelet=2, patch=16)
  assert np.all(masked[2:4, 0:16, 32:48] == 128)
  keep = np.ones(frames.shape[:3], bool)
  keep[2:4, 0:16, 32:48] = False
  np.testing.assert_array_equal(masked[keep], frames[keep])


def test_resume_drops_a_torn_last_line(tmp_path):
  lines = [json.dumps({'step': s, 'loss': 1.0}) for s in (1, 2, 3)]
  (tmp_path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n{"step": 4, "lo')
  w = metrics.MetricsWriter(tmp_path, total_steps=10, enabled=True, resume_step=2)
  w.write(3, {'loss': 0.5})
  w.close()
  got = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in got] == [1, 2, 3] and got[-1]['loss'] == 0.5


def test_resume_names_a_corrupt_line_before_the_last(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n{"st\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r'metrics\.jsonl:2: not a JSON line'):
    metrics.MetricsWriter(tmp_path, total_steps=10, enabled=True, resume_step=1)
