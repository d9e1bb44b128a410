"""The pretraining model's variants: extra heads (MotionMAE / MME), MAM2's regressor and second
decoder; and each variant config training a few steps through the real trainer."""

import dataclasses
import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgm_jax import model as model_lib
from mgm_jax import schema
from mgm_jax import train

_BASE = dict(num_frames=4, img_size=(32, 32), encoder_depth=2, decoder_depth=1,
             dtype="float32")


def _inputs(b=2, num_masked=5, seed=0):
  rng = np.random.default_rng(seed)
  video = jnp.asarray(rng.normal(size=(b, 4, 32, 32, 3)), jnp.float32)
  mask = np.zeros((b, 8), bool)
  for row in mask:
    row[rng.choice(8, num_masked, replace=False)] = True
  return video, jnp.asarray(mask)


@pytest.mark.parametrize("variant", [
    dict(),
    dict(extra_heads=(("frame_diff", 7), ("hog", 3))),
    dict(regressor_depth=2, motion_heads=(("frame_diff", 7),)),
    dict(regressor_depth=1, extra_heads=(("hog", 3),), motion_heads=(("trajectory", 4),)),
])
def test_predict_returns_every_head_for_the_masked_tokens(variant):
  cfg = model_lib.model_config("tiny", **_BASE, **variant)
  model = model_lib.make_model(cfg, nnx.Rngs(0))
  video, mask = _inputs()
  out = model.predict(video, mask, num_masked=5)
  heads = dict((("pixels", cfg.patch_dim),) + cfg.extra_heads + cfg.motion_heads)
  assert {k: v.shape for k, v in out.items()} == {k: (2, 5, d) for k, d in heads.items()}
  np.testing.assert_array_equal(model(video, mask, num_masked=5), out["pixels"])
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  assert ("mask_token" in params) == (cfg.regressor_depth == 0)
  assert ("motion_decoder" in params) == bool(cfg.motion_heads)
  # Every head gets a gradient.
  graphdef, p, rest = nnx.split(model, nnx.Param, ...)
  grads = jax.jit(jax.grad(lambda p: sum(jnp.sum(v ** 2) for v in nnx.merge(
      graphdef, p, rest).predict(video, mask, num_masked=5).values())))(p)
  flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grads))[0]
  dead = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g))]
  assert not dead, dead
  # from_params rebuilds the same model.
  again = model_lib.from_params(cfg, params)
  np.testing.assert_allclose(again.predict(video, mask, num_masked=5)["pixels"], out["pixels"],
                             rtol=1e-6)


def test_regressor_only_reads_the_visible_features():
  """Cross-attention only: a masked token's regressed feature depends on the visible tokens'
  features and its own position, not on the other masked tokens (no self-attention)."""
  cfg = model_lib.model_config("tiny", **_BASE, regressor_depth=2)
  reg = model_lib.Regressor(cfg, rngs=nnx.Rngs(1))
  rng = np.random.default_rng(1)
  x_vis = jnp.asarray(rng.normal(size=(1, 3, cfg.encoder_dim)), jnp.float32)
  visible = jnp.array([[0, 1, 3]])
  both = reg(x_vis, visible, jnp.array([[2, 5]]))
  alone = reg(x_vis, visible, jnp.array([[5]]))
  np.testing.assert_allclose(both[:, 1], alone[:, 0], rtol=1e-5, atol=1e-6)
  other = reg(x_vis.at[:, 0].multiply(-1.0), visible, jnp.array([[5]]))
  assert np.abs(np.asarray(other - alone)).max() > 1e-3
  moved = reg(x_vis, jnp.array([[0, 1, 6]]), jnp.array([[5]]))  # the keys carry positions
  assert np.abs(np.asarray(moved - alone)).max() > 1e-4


def test_head_names_are_checked():
  with pytest.raises(ValueError, match="unique"):
    model_lib.model_config("tiny", **_BASE, extra_heads=(("pixels", 3),))
  with pytest.raises(ValueError, match="unique"):
    model_lib.model_config("tiny", **_BASE, extra_heads=(("a", 3),), motion_heads=(("a", 2),))
  with pytest.raises(ValueError, match="regressor_depth"):
    model_lib.model_config("tiny", **_BASE, regressor_depth=-1)


def _small(config, steps):
  config.total_steps = steps
  config.batch_size = jax.device_count()
  config.model.update(img_size=64)
  config.data.update(num_synthetic_videos=4, repeats=1, num_threads=1,
                     synthetic=dict(height=48, width=64, num_frames=16, style="bands",
                                    num_objects=2, object_size=(8, 16)))
  config.log_every = config.checkpoint_every = steps
  config.image_every = 0
  return config


@pytest.mark.parametrize("name,terms", [
    ("mam2_ssv2", {"loss_pixels", "loss_frame_diff"}),
    ("mgm_mme_ssv2", {"loss_hog", "loss_trajectory", "trajectory_clips"}),
])
def test_variant_configs_train_through_the_trainer(tmp_path, name, terms):
  config = _small(schema.load(f"configs/{name}.py:demo"), steps=2)
  workdir = str(tmp_path / name)
  train.train(config, workdir)
  lines = [json.loads(l) for l in open(f"{workdir}/metrics.jsonl", encoding="utf-8")]
  last = lines[-1]
  assert terms <= set(last), last
  assert all(np.isfinite(last[k]) for k in terms)
  if "trajectory_clips" in terms:
    assert last["trajectory_clips"] == 1.0  # generated H.264: every clip has vectors
