"""Tests of the training step and loop: sharding, accumulation, resume, failures, config errors.

Runs on 8 fake CPU devices (tests/conftest.py sets XLA_FLAGS before JAX starts).
"""

import json
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import masking
from mgm_jax import model as model_lib
from mgm_jax import optim
from mgm_jax import schema
from mgm_jax import sharding
from mgm_jax import train
from mgm_jax import train_step as step_lib
from mgm_jax import validate

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL_MODEL = dict(size="tiny", num_frames=4, img_size=32, tubelet=2, patch=16,
                   encoder_dim=32, encoder_depth=1, encoder_heads=2, decoder_dim=32,
                   decoder_depth=1, decoder_heads=2, drop_path_rate=0.0, dtype="float32",
                   remat=False)


def _load_config(name, arg=None):
  return schema.load(f"{REPO / 'configs' / name}.py" + (f":{arg}" if arg else ""))


@pytest.fixture(scope="module")
def videos(tiny_videos):
  return tiny_videos


def _config(videos, **changes):
  config = _load_config("demo", "6")
  config.model.update(SMALL_MODEL)
  config.data.source = "list"
  config.data.list_file = str(videos / "train.txt")
  config.data.repeats = 1
  config.batch_size = 8
  config.log_every = 1
  config.image_every = 0
  config.checkpoint_every = 2
  for key, value in changes.items():
    target = config
    *path, leaf = key.split(".")
    for p in path:
      target = target[p]
    target[leaf] = value
  return config


# --- The step: sharded and accumulated versions equal the plain one. ---

@pytest.fixture(scope="module")
def step_setup():
  cfg = model_lib.model_config_from(SMALL_MODEL)
  model = model_lib.MaskedAutoencoder(cfg, rngs=nnx.Rngs(0))
  optim_cfg = ml_collections.ConfigDict(dict(
      base_lr=0.01, min_lr=0.0, warmup_steps=0, warmup_epochs=0, b1=0.9, b2=0.95,
      weight_decay=0.05, grad_clip=1.0))
  schedule = optim.make_schedule(optim_cfg, 16, 10, 100)
  optimizer = optim.make_optimizer(optim_cfg, schedule)
  rng = np.random.default_rng(0)
  num_masked = masking.num_masked("tube", cfg.grid, 0.5)
  batches = [{"frames": rng.integers(0, 256, (16, 4, 32, 32, 3), dtype=np.uint8),
              "mask": np.stack([masking.make_mask("tube", cfg.grid, 0.5, rng) for _ in range(16)])}
             for _ in range(2)]
  return model, optimizer, schedule, num_masked, batches


def _fresh_state(model, optimizer):
  """A copy: the steps donate their input state, which must not alias the model's arrays."""
  return jax.tree.map(jnp.copy, optim.init_state(model, optimizer))


def _run(step_fn, state, batches, put=lambda b: b):
  losses = []
  for b in batches:
    state, metrics = step_fn(state, put(b))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state), losses


# AdamW moves every parameter by about +-lr whatever its gradient's size, so a float-summation
# difference in a near-zero gradient (other shard layout, other micro-batch order) shows up as a
# small fraction of lr: parameters are compared to 1% of the step's lr (0.01), losses to 1e-5.
PARAM_ATOL = 1e-4


def _assert_trees_close(a, b, atol=PARAM_ATOL):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_sharded_step_equals_single_device(step_setup):
  assert jax.device_count() == 8, "conftest should provide 8 fake CPU devices"
  model, optimizer, schedule, num_masked, batches = step_setup
  single = step_lib.make_train_step(model, optimizer, schedule, num_masked=num_masked)
  ref_state, ref_losses = _run(single, _fresh_state(model, optimizer), batches)

  mesh = sharding.make_mesh(data=2, fsdp=4)
  init = _fresh_state(model, optimizer)
  shardings = step_lib.state_shardings(jax.eval_shape(lambda: init), mesh)
  sharded = step_lib.make_train_step(model, optimizer, schedule, num_masked=num_masked,
                                     mesh=mesh, shardings=shardings)
  state = jax.device_put(init, shardings)
  assert any(s.spec != jax.sharding.PartitionSpec()
             for s in jax.tree.leaves(jax.tree.map(lambda x: x.sharding, state["params"])))
  put = lambda b: jax.device_put(b, sharding.batch_sharding(mesh))
  got_state, got_losses = _run(sharded, state, batches, put)
  np.testing.assert_allclose(got_losses, ref_losses, rtol=1e-5)
  _assert_trees_close(got_state["params"], ref_state["params"])
  assert ref_losses[1] != ref_losses[0]  # the parameters did move


def test_accumulation_equals_one_big_batch(step_setup):
  model, optimizer, schedule, num_masked, batches = step_setup
  whole = step_lib.make_train_step(model, optimizer, schedule, num_masked=num_masked)
  accum = step_lib.make_train_step(model, optimizer, schedule, num_masked=num_masked,
                                   accum_steps=4)
  ref_state, ref_losses = _run(whole, _fresh_state(model, optimizer), batches)
  got_state, got_losses = _run(accum, _fresh_state(model, optimizer), batches)
  np.testing.assert_allclose(got_losses, ref_losses, rtol=1e-5)
  _assert_trees_close(got_state["params"], ref_state["params"])


def test_weight_decay_skips_biases_norms_and_mask_token(step_setup):
  model, *_ = step_setup
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  mask = optim.decay_mask(params)
  assert mask["mask_token"] is False
  block = mask["encoder"]["blocks"][0]
  assert block["attn"]["qkv"]["kernel"] and block["mlp"]["fc1"]["kernel"]
  assert not block["attn"]["q_bias"] and not block["norm1"]["scale"]
  assert not block["mlp"]["fc1"]["bias"]


def test_learning_rate_is_linearly_scaled_with_warmup_and_cosine():
  config = _load_config("ssv2")
  schedule = optim.make_schedule(config.optim, 512, 100, 1000)
  assert schedule.peak_lr == pytest.approx(1.5e-4 * 2) and schedule.warmup_steps == 1000
  schedule = optim.make_schedule(config.optim, 512, 10, 1000)
  assert float(schedule(400)) == pytest.approx(3e-4, rel=1e-5)
  assert float(schedule(1000)) == pytest.approx(2e-5, rel=1e-4)
  assert float(schedule(700)) < float(schedule(500))


# --- The loop: resume, failures, config errors. ---

def _losses(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {rec["step"]: rec["loss"] for rec in map(json.loads, lines)}


@pytest.fixture(scope="module")
def uninterrupted(videos, tmp_path_factory):
  """The reference: 6 steps in one go. Returns (losses by step, final metrics)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  final = train.train(_config(videos), str(workdir))
  return _losses(workdir), final


def test_interrupt_and_resume_continues_exactly(videos, tmp_path, uninterrupted):
  config = _config(videos)
  want, full = uninterrupted
  train.train(config, str(tmp_path / "split"), stop_after=3)
  assert checkpoint_lib.Checkpointer(tmp_path / "split" / "checkpoints").latest_step() == 3
  with open(tmp_path / "split" / "metrics.jsonl", "a") as f:  # logged after the checkpoint,
    f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")    # then the run died
  resumed = train.train(config, str(tmp_path / "split"))
  lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == list(range(1, 7))  # each step once
  got = _losses(tmp_path / "split")
  for step in range(1, 7):  # steps 4-6 ran after the restore: same batches, same losses
    assert got[step] == pytest.approx(want[step], rel=1e-6), step
  assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-6)
  assert (tmp_path / "split" / "config.json").exists()
  assert list((tmp_path / "split" / "tb").iterdir())


def test_resume_onto_a_different_mesh(videos, tmp_path, uninterrupted):
  want, _ = uninterrupted
  first = _config(videos, **{"mesh.data": 1, "mesh.fsdp": 8})  # parameters split 8 ways
  train.train(first, str(tmp_path / "moved"), stop_after=3)
  second = _config(videos, **{"mesh.data": 2, "mesh.fsdp": 4})  # restored split 4 ways
  train.train(second, str(tmp_path / "moved"))
  got = _losses(tmp_path / "moved")
  for step in range(1, 7):  # same batches; only float summation order differs
    assert got[step] == pytest.approx(want[step], rel=1e-4), step


def test_demo_loss_falls_and_writes_outputs(videos, tmp_path):
  config = _config(videos, total_steps=30, log_every=5, image_every=30, checkpoint_every=30)
  train.train(config, str(tmp_path))
  losses = _losses(tmp_path)
  assert losses[30] < 0.7 * losses[5]
  assert (tmp_path / "images" / "reconstruction_000030.png").exists()
  assert checkpoint_lib.Checkpointer(tmp_path / "checkpoints").all_steps() == [30]


def test_nonfinite_loss_stops_and_names_the_step(videos, tmp_path):
  config = _config(videos, **{"optim.base_lr": 1e30, "optim.grad_clip": 0.0,
                              "checkpoint_every": 1, "total_steps": 6})
  with pytest.raises(train.NonFiniteLossError, match=r"at step (\d+)") as info:
    train.train(config, str(tmp_path))
  bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
  saved = checkpoint_lib.Checkpointer(tmp_path / "checkpoints").all_steps()
  assert saved and max(saved) < bad_step  # nothing at or after the bad step was saved


def test_too_many_broken_videos_stop_the_run(videos, tmp_path):
  for i in range(12):
    (tmp_path / f"bad{i}.mp4").write_bytes(b"not a video" * i)
  good = sorted((videos / "videos").iterdir())[0]
  lines = [f"bad{i}.mp4 0" for i in range(12)] + [f"{good} 1"]
  (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
  config = _config(videos, **{"data.list_file": str(tmp_path / "list.txt"),
                              "data.root": str(tmp_path)})
  with pytest.raises(train.SkippedVideosError, match="broken"):
    train.train(config, str(tmp_path / "work"))


@pytest.mark.parametrize("field, value, named", [
    ("mask.ratio", 1.0, None), ("mask.ratio", 0.0, None), ("mask.strategy", "bogus", None),
    ("model.size", "XXL", None), ("model.img_size", 40, None), ("model.num_frames", 5, None),
    ("model.img_size", [224, 160], None),
    ("batch_size", 12, None), ("accum_steps", 0, None), ("accum_steps", 3, "batch_size"),
    ("data.source", "ftp", None), ("data.motion", "raft", None), ("data.repeats", 0, None),
    ("data.flow_preset", "slow", None), ("mask.pool", "top2", None), ("mask.smooth", -1, None),
    ("model.attention", "axial", None),
    # Values that used to pass and then did damage or died later with a bare library error.
    ("optim.grad_clip", -1.0, None), ("keep_checkpoints", 0, None), ("log_every", 0, None),
    ("checkpoint_every", 0, None), ("model.patch", 0, None), ("model.tubelet", 0, None),
    ("batch_size", 0, None), ("data.scales", (), None), ("data.max_skipped_fraction", -0.1, None),
    ("data.max_skipped_fraction", 1.5, None), ("data.dataset", "imagenet", None),
    ("model.dtype", "float16", None), ("mesh.fsdp", 3, "mesh"), ("optim.b2", 1.0, None),
    # Unknown fields and wrong types are named too.
    ("data.lsit_file", "x.txt", None), ("optim.lr", 0.1, None), ("total_steps", 1e5, None),
    ("data.synthetic.heigth", 64, None),
])
def test_invalid_config_names_its_field(field, value, named):
  config = _load_config("ssv2")
  config.data.list_file = "/nonexistent/list.txt"
  config.batch_size = 64
  target = config
  *path, leaf = field.split(".")
  for p in path:
    target = target[p]
  if leaf in target:
    del target[leaf]  # replace rather than override: ConfigDict keeps a field's type
  target[leaf] = value
  named = named or field
  with pytest.raises(validate.ConfigError, match=r"config\." + named.replace(".", r"\.")):
    validate.validate(config, num_devices=8)


def test_unknown_field_suggests_the_close_one():
  config = _load_config("ssv2")
  config.data.list_file = "/data/list.txt"
  config.data.lsit_file = "x"
  with pytest.raises(validate.ConfigError, match=r"did you mean data\.list_file\?"):
    validate.validate(config, num_devices=8)


@pytest.mark.parametrize("name", ["demo", "ssv2", "k400", "ucf101"])
def test_shipped_configs_are_valid(name):
  config = _load_config(name)
  if name == "ucf101":  # VideoMAE's small-data recipe with MGM's mask (configs/ucf101.py)
    config.data.prepared_dir = "/data/ucf101_prepared"
    assert config.mask.strategy == "mgm" and config.mask.ratio == 0.75
    assert config.batch_size == 192 and config.optim.base_lr == 3e-4
  elif name != "demo":
    config.data.list_file = "/data/list.txt"
    assert config.mask.strategy == "mgm" and config.mask.ratio == 0.75
    assert config.batch_size == 512 and config.optim.base_lr == 1.5e-4
  validate.validate(config, num_devices=8)
