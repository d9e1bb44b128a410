"""Tests for mgm_jax.inference: a saved run loads back bit-for-bit, without data."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import optim
from mgm_jax import schema
from mgm_jax import reconstruct


def _config():
  config = ml_collections.ConfigDict()
  config.batch_size = 2
  config.model = ml_collections.ConfigDict(
      dict(size='tiny', num_frames=4, img_size=32, drop_path_rate=0.1))
  config.optim = ml_collections.ConfigDict(
      dict(base_lr=1.5e-4, min_lr=1e-5, warmup_epochs=1, b1=0.9, b2=0.95, weight_decay=0.05,
           grad_clip=None))
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A workdir with config.json and a checkpoint at step 7; returns (workdir, model, config)."""
  workdir = tmp_path_factory.mktemp('run')
  config = _config()
  # Random weights from NumPy (no per-shape XLA compilations as with an eager init), biases
  # included, so that a bias lost on the way would show. Drop path off: the same parameters.
  cfg = model_lib.model_config_from(config.model, drop_path_rate=0.0)
  model = nnx.eval_shape(lambda: model_lib.MaskedAutoencoder(cfg, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(5)
  for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    var.set_value(jnp.asarray(0.05 * rng.standard_normal(var.shape), jnp.float32))
  schedule = optim.make_schedule(config.optim, config.batch_size, 10, 100)
  state = optim.init_state(model, optim.make_optimizer(config.optim, schedule))
  state['step'] = state['step'] + 7
  (workdir / 'config.json').write_text(config.to_json())
  ckpt = checkpoint_lib.Checkpointer(workdir / 'checkpoints', async_save=False)
  assert ckpt.save(7, state, force=True)
  ckpt.close()
  return workdir, model, config


def test_model_config_from_accepts_ints_lists_and_overrides():
  cfg = model_lib.model_config_from({'size': 'tiny', 'img_size': [32, 48], 'num_frames': 4},
                                    remat=True)
  assert cfg.img_size == (32, 48) and cfg.num_frames == 4 and cfg.remat
  assert model_lib.model_config_from({'size': 'S', 'img_size': 112}).img_size == (112, 112)
  with pytest.raises(ValueError, match='unknown'):
    model_lib.model_config_from({'size': 'tiny', 'depth': 3})


def test_load_restores_exact_weights_and_features(run):
  workdir, model, config = run
  loaded = inference.load(workdir)
  assert loaded.step == 7
  # Every saved field as saved; the fields the file lacks get their schema defaults.
  def saved_part(got, want):
    return {k: saved_part(got[k], v) if isinstance(v, dict) else got[k] for k, v in want.items()}
  assert saved_part(loaded.config.to_dict(), config.to_dict()) == config.to_dict()
  assert loaded.config.eval.temporal_views == schema.defaults().eval.temporal_views
  assert loaded.model.config.drop_path_rate == 0.0
  want = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  got = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
  jax.tree.map(np.testing.assert_array_equal, got, want)

  frames = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
  feats = inference.features(loaded, frames)
  assert feats.shape == (2, 2 * 2 * 2, model.config.encoder_dim)
  ref = inference.features(inference.Loaded(model, config, 0), frames)
  np.testing.assert_array_equal(np.asarray(feats), np.asarray(ref))


def test_reconstruct_matches_the_model(run):
  workdir, model, _ = run
  loaded = inference.load(workdir, step=7)
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
  mask = np.zeros((2, 8), bool)
  for row in mask:
    row[rng.permutation(8)[:6]] = True
  pred = inference.reconstruct(loaded, frames, mask.reshape(2, 2, 2, 2))
  assert pred.shape == (2, 6, 2 * 16 * 16 * 3) and pred.dtype == np.float32
  ref = reconstruct.reconstruct_batch(model, frames, mask, 6)
  np.testing.assert_array_equal(pred, ref)
  panel = reconstruct.reconstruction_panel(frames[0], mask[0], pred[0], tubelet=2, patch=16)
  assert panel.dtype == np.uint8 and panel.ndim == 3
