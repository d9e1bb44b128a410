"""The motion-aware targets and their loss path: frame differences by hand, masked ordering,
weights, per-clip validity, and a config's targets and heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgm_jax import loss as loss_lib
from mgm_jax import schema
from mgm_jax import targets as targets_lib
from mgm_jax import validate


def _video(rng, b=2, t=4, h=32, w=32):
  return rng.integers(0, 256, (b, t, h, w, 3), dtype=np.uint8)


def _hand_frame_diff(frames, between, tubelet, stride, patch):
  """Loops: per clip, slot, token, the span's adjacent differences in (step, y, x, c) order."""
  b, t, h, w, _ = frames.shape
  out = []
  for n in range(b):
    rows = []
    for k in range(t // tubelet):
      span = []
      for i in range(tubelet):
        span.append(frames[n, k * tubelet + i] / 255.0)
        if i < tubelet - 1 and between is not None:
          span += [between[n, k, i * (stride - 1) + r] / 255.0 for r in range(stride - 1)]
      diffs = [span[j + 1] - span[j] for j in range(len(span) - 1)]
      for y in range(h // patch):
        for x in range(w // patch):
          rows.append(np.concatenate([
              d[y * patch:(y + 1) * patch, x * patch:(x + 1) * patch].reshape(-1)
              for d in diffs]))
    out.append(rows)
  return np.asarray(out, np.float32)


@pytest.mark.parametrize("tubelet,stride", [(2, 3), (2, 1), (3, 2)])
def test_dense_frame_diff_equals_hand_computation(tubelet, stride):
  rng = np.random.default_rng(0)
  frames = _video(rng, t=2 * tubelet)
  k = (tubelet - 1) * (stride - 1)
  between = rng.integers(0, 256, (2, 2, k, 32, 32, 3), dtype=np.uint8)
  target = targets_lib.FrameDiffTarget(tubelet=tubelet, patch=16, stride=stride, norm=False)
  got = np.asarray(target({"video01": frames / 255.0, "between": between}))
  want = _hand_frame_diff(frames, between if stride > 1 else None, tubelet, stride, 16)
  assert got.shape == (2, 2 * 2 * 2, target.dim()) == want.shape
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_sampled_frame_diff_and_telescoping():
  """Without the frames in between: f(a+s) - f(a); the dense steps of a span sum to it."""
  rng = np.random.default_rng(1)
  frames = _video(rng)
  between = rng.integers(0, 256, (2, 2, 3, 32, 32, 3), dtype=np.uint8)
  batch = {"video01": frames / 255.0, "between": between}
  sampled = targets_lib.FrameDiffTarget(stride=4, dense=False, norm=False)
  dense = targets_lib.FrameDiffTarget(stride=4, dense=True, norm=False)
  assert sampled.dim() == 16 * 16 * 3 and dense.dim() == 4 * 16 * 16 * 3
  want = _hand_frame_diff(frames, None, 2, 4, 16)
  np.testing.assert_allclose(np.asarray(sampled(batch)), want, atol=1e-6)
  steps = np.asarray(dense(batch)).reshape(2, 8, 4, -1).sum(axis=2)
  np.testing.assert_allclose(steps, want, atol=1e-5)


def test_frame_diff_norm_is_per_patch_and_channel():
  rng = np.random.default_rng(2)
  frames = _video(rng)
  batch = {"video01": frames / 255.0}
  raw = np.asarray(targets_lib.FrameDiffTarget(stride=1, norm=False)(batch))
  normed = np.asarray(targets_lib.FrameDiffTarget(stride=1, norm=True)(batch))
  x = raw.reshape(2, 8, -1, 3)
  want = (x - x.mean(axis=2, keepdims=True)) / (x.std(axis=2, ddof=1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(normed, want.reshape(normed.shape), atol=1e-4)


def test_masked_losses_order_weights_and_clip_validity():
  """Predictions are the masked tokens in token order; each term is the MSE against the
  target's x[mask], weighted as configured; a clip of validity 0 is left out of its term."""
  rng = np.random.default_rng(3)
  b, n, d = 3, 8, 5
  mask = np.zeros((b, n), bool)
  for row in mask:
    row[rng.choice(n, 6, replace=False)] = True
  tgt_a = rng.normal(size=(b, n, d)).astype(np.float32)
  tgt_b = rng.normal(size=(b, n, 2)).astype(np.float32)
  preds = {"a": rng.normal(size=(b, 6, d)).astype(np.float32),
           "b": rng.normal(size=(b, 6, 2)).astype(np.float32)}

  class _T:
    def __init__(self, name, weight, value, valid_key=None):
      self.name, self.weight, self.value, self.valid_key = name, weight, value, valid_key

    def __call__(self, batch):
      return jnp.asarray(self.value)

  valid = np.array([1.0, 0.0, 1.0], np.float32)
  total, terms = loss_lib.masked_losses(
      preds, {"valid": valid}, mask, 6, [_T("a", 0.5, tgt_a), _T("b", 3.0, tgt_b, "valid")])
  want_a = np.mean([(preds["a"][i] - tgt_a[i][mask[i]]) ** 2 for i in range(b)])
  per_clip_b = [np.mean((preds["b"][i] - tgt_b[i][mask[i]]) ** 2) for i in range(b)]
  want_b = (per_clip_b[0] + per_clip_b[2]) / 2
  np.testing.assert_allclose(float(terms["a"]), want_a, rtol=1e-5)
  np.testing.assert_allclose(float(terms["b"]), want_b, rtol=1e-5)
  np.testing.assert_allclose(float(total), 0.5 * want_a + 3.0 * want_b, rtol=1e-5)
  _, none_valid = loss_lib.masked_losses(preds, {"valid": np.zeros(3, np.float32)}, mask, 6,
                                         [_T("b", 1.0, tgt_b, "valid")])
  assert float(none_valid["b"]) == 0.0


def test_frame_diff_has_no_gradient_and_jits():
  rng = np.random.default_rng(4)
  frames = _video(rng)
  between = rng.integers(0, 256, (2, 2, 1, 32, 32, 3), dtype=np.uint8)
  target = targets_lib.FrameDiffTarget(stride=2)
  f = lambda v: jnp.sum(target({"video01": v, "between": between}))
  g = jax.grad(f)(jnp.asarray(frames / 255.0, jnp.float32))
  assert not np.any(np.asarray(g))
  call = lambda v: target({"video01": v, "between": between})
  np.testing.assert_allclose(jax.jit(call)(frames / 255.0), call(frames / 255.0), atol=1e-4)


def _pretrain_config(**loss):
  config = schema.defaults()
  config.model.update(size="tiny", num_frames=4, img_size=32)
  config.data.update(source="synthetic", num_synthetic_videos=4, stride=3)
  config.loss.update(**loss)
  config.batch_size = 2
  return config


def test_config_maps_to_terms_and_heads():
  config = _pretrain_config(frame_diff=2.0, trajectory=0.5, hog=0.25, trajectory_points=2)
  terms = targets_lib.from_config(config)
  assert [t.name for t in terms] == ["pixels", "frame_diff", "trajectory", "hog"]
  assert [t.weight for t in terms] == [1.0, 2.0, 0.5, 0.25]
  fd, traj, hog = terms[1:]
  assert fd.stride == 3 and fd.reads_between and fd.dim() == 3 * 16 * 16 * 3
  assert traj.steps == 3 and traj.dim() == 3 * (1 + 4) * 2  # the tubelet's span at stride 3
  assert hog.dim() == 2 * 4 * 9 * 3
  assert targets_lib.batch_keys(terms) == ("between", "trajectory", "trajectory_valid")
  one = targets_lib.model_config(config)  # MotionMAE: heads on the one decoder
  assert one.extra_heads == (("frame_diff", fd.dim()), ("trajectory", traj.dim()),
                             ("hog", hog.dim())) and one.motion_heads == ()
  config.model.update(motion_decoder=True, regressor_depth=2)  # MAM2
  two = targets_lib.model_config(config)
  assert two.extra_heads == (("hog", hog.dim()),) and two.regressor_depth == 2
  assert two.motion_heads == (("frame_diff", fd.dim()), ("trajectory", traj.dim()))
  config.loss.frame_diff_dense = False
  assert targets_lib.from_config(config)[1].dim() == 16 * 16 * 3
  assert "between" not in targets_lib.batch_keys(targets_lib.from_config(config))


@pytest.mark.parametrize("change,field", [
    (dict(pixels=0.0), "config.loss:"),
    (dict(frame_diff=-1.0), "config.loss.frame_diff"),
    (dict(trajectory=1.0, trajectory_points=3), "config.loss.trajectory_points"),
    (dict(trajectory=1.0, trajectory_scale=0.0), "config.loss.trajectory_scale"),
    (dict(trajectory=1.0, trajectory_points=1, trajectory_patch_norm=True),
     "config.loss.trajectory_points"),
])
def test_bad_target_fields_name_the_field(change, field):
  config = _pretrain_config(**change)
  with pytest.raises(validate.ConfigError, match=field):
    validate.validate(config, num_devices=1)


def test_targets_that_cannot_work_stop_at_start():
  config = _pretrain_config(trajectory=1.0)
  config.data.motion = "frame_diff"
  with pytest.raises(validate.ConfigError, match="loss.trajectory: needs codec motion"):
    validate.validate(config, num_devices=1)
  config = _pretrain_config(frame_diff=1.0)
  config.data.sampling = "segments"
  with pytest.raises(validate.ConfigError, match="loss.frame_diff_dense"):
    validate.validate(config, num_devices=1)
  config = _pretrain_config(frame_diff=1.0)
  config.data.rand_augment_ops = 2
  with pytest.raises(validate.ConfigError, match="RandAugment"):
    validate.validate(config, num_devices=1)
  config = _pretrain_config(frame_diff=1.0)
  config.model.update(tubelet=1, num_frames=4)
  with pytest.raises(validate.ConfigError, match="loss.frame_diff: .*tubelet"):
    validate.validate(config, num_devices=1)
  config = _pretrain_config()
  config.model.motion_decoder = True
  with pytest.raises(validate.ConfigError, match="model.motion_decoder"):
    validate.validate(config, num_devices=1)
  validate.validate(_pretrain_config(frame_diff=1.0, trajectory=1.0, hog=1.0), num_devices=1)


def test_trajectory_target_scale_and_mme_patch_norm():
  rng = np.random.default_rng(5)
  steps, points = 3, 2
  raw = rng.normal(size=(2, 4, steps * (1 + points ** 2) * 2)).astype(np.float32)
  scaled = targets_lib.TrajectoryTarget(steps=steps, points=points, scale=4.0)
  np.testing.assert_allclose(np.asarray(scaled({"trajectory": raw})), raw / 4.0, rtol=1e-6)
  mme = targets_lib.TrajectoryTarget(steps=steps, points=points, patch_norm=True)
  got = np.asarray(mme({"trajectory": raw}))
  assert got.shape == (2, 4, mme.dim()) and mme.dim() == steps * 4 * 2
  dev = raw.reshape(2, 4, steps, 5, 2)[:, :, :, 1:]  # per (step, coordinate), over the points
  want = dev / (dev.std(axis=3, ddof=1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-4, atol=1e-5)


def test_trajectory_steps_override():
  config = _pretrain_config(trajectory=1.0, trajectory_steps=4)
  (traj,) = [t for t in targets_lib.from_config(config) if t.name == "trajectory"]
  assert traj.steps == 4 and traj.dim() == 4 * 5 * 2


def test_frame_diff_tokens_line_up_with_the_pixel_target():
  """Change one token's pixels in the second frame of slot 1: the frame difference is nonzero
  in exactly that token, the one whose pixel target changes."""
  frames = np.full((1, 4, 32, 32, 3), 100, np.uint8)
  frames[0, 3, 16:32, 0:16] = 180  # slot 1, row 1, column 0 -> token 1 * 4 + 2 = 6
  batch = {"video01": frames / 255.0}
  diff = np.asarray(targets_lib.FrameDiffTarget(stride=1, norm=False)(batch))
  changed = np.flatnonzero(np.abs(diff).sum(axis=-1))
  pixels = np.asarray(loss_lib.reconstruction_target(frames / 255.0, 2, 16, norm_pix=False))
  flat = np.full_like(pixels, 100 / 255.0)
  assert changed.tolist() == [6] == np.flatnonzero(np.abs(pixels - flat).sum(-1)).tolist()
