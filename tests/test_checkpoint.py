"""Checkpointer: failed saves surface as CheckpointError (and never hang), corrupt or mismatched
checkpoints fail in one short message naming the step, with a way back to the previous step.

Saves that fail run in a child process with a timeout: a failed Orbax save can leave threads
that block the interpreter's exit for minutes, which must fail the test, not hang the suite.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mgm_jax.checkpoint import CheckpointError, Checkpointer, StateMismatchError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _state(scale=1.0):
  return {"params": {"w": jnp.arange(12.0).reshape(3, 4) * scale, "b": jnp.zeros(4)},
          "step": jnp.int32(0)}


def _abstract(tree):
  return jax.eval_shape(lambda: tree)


def _data_iterator():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def _run_child(code: str, timeout: float = 120) -> dict:
  """Runs `code` in a fresh python; returns the JSON it prints last. Fails if it hangs."""
  prelude = textwrap.dedent("""\
      import json, os, sys
      import jax, jax.numpy as jnp, numpy as np
      from mgm_jax import checkpoint as checkpoint_lib
      out = {}
      def error(f):
        try:
          f()
        except Exception as e:  # what the caller sees
          return [type(e).__name__, isinstance(e, checkpoint_lib.CheckpointError), str(e)]
        return None
      """)
  epilogue = "\nprint(json.dumps(out), flush=True)\n"
  try:
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code) + epilogue],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  except subprocess.TimeoutExpired as e:
    out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else e.stdout or ""
    pytest.fail(f"the checkpointing child hung (> {timeout} s); its stdout: {out[-2000:]}")
  lines = proc.stdout.strip().splitlines()
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  return json.loads(lines[-1])


# --- 1. Unusable directories and failed saves.

def test_directory_that_is_a_file_fails_at_construction(tmp_path):
  (tmp_path / "checkpoints").write_text("not a directory")
  with pytest.raises(CheckpointError, match=f"{tmp_path}/checkpoints: .*not a directory"):
    Checkpointer(tmp_path / "checkpoints")
  with pytest.raises(CheckpointError, match=f"{tmp_path}/checkpoints/sub"):
    Checkpointer(tmp_path / "checkpoints" / "sub")  # its parent is a file


def test_read_only_creates_nothing(tmp_path):
  ckpt = Checkpointer(tmp_path / "none", read_only=True)
  assert ckpt.latest_step() is None
  ckpt.close()
  assert not (tmp_path / "none").exists()


def test_save_into_a_directory_replaced_by_a_file_raises_and_exits(tmp_path):
  out = _run_child(f"""
      import shutil
      d = {str(tmp_path / "checkpoints")!r}
      ckpt = checkpoint_lib.Checkpointer(d, every_steps=1)
      ckpt.save(1, {{"a": jnp.ones(3)}}); ckpt.wait()
      shutil.move(d, d + ".moved"); open(d, "w").close()  # e.g. a mount gone, a stray file
      out["save"] = error(lambda: ckpt.save(2, {{"a": jnp.ones(3)}}))
      out["close"] = error(ckpt.close)
      """)
  name, is_ckpt_error, message = out["save"]
  assert is_ckpt_error, out
  assert message.startswith(f"{tmp_path}/checkpoints/2: checkpoint save failed: "), message
  assert "NotADirectoryError" in message and len(message) < 600
  assert out["close"] is None  # the error was reported once; close releases and returns
  ckpt = Checkpointer(tmp_path / "checkpoints.moved", read_only=True)
  assert ckpt.restore(_abstract({"a": jnp.ones(3)}))[0] == 1


def test_failed_background_write_surfaces_at_wait(tmp_path):
  """The async part of a save fails (patched Orbax commit): `wait`, then `save`, raise."""
  out = _run_child(f"""
      from orbax.checkpoint._src.path import atomicity
      d = {str(tmp_path / "checkpoints")!r}
      ckpt = checkpoint_lib.Checkpointer(d, every_steps=1)
      ckpt.save(1, {{"a": jnp.ones(3)}}); ckpt.wait()
      async def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
      atomicity.on_commit_callback, original = broken, atomicity.on_commit_callback
      out["saved"] = ckpt.save(2, {{"a": jnp.ones(3) * 2}})
      out["wait"] = error(ckpt.wait)
      atomicity.on_commit_callback = original  # the disk has room again
      out["save"] = error(lambda: ckpt.save(3, {{"a": jnp.ones(3)}}))
      out["close"] = error(ckpt.close)
      ckpt = checkpoint_lib.Checkpointer(d, read_only=True)
      out["steps"] = ckpt.all_steps()
      out["restored"] = ckpt.restore(jax.eval_shape(lambda: {{"a": jnp.ones(3)}}))[0]
      """)
  assert out["saved"] is True
  name, is_ckpt_error, message = out["wait"]
  assert is_ckpt_error, out
  assert message.startswith(f"{tmp_path}/checkpoints/2: checkpoint save failed: OSError"), message
  assert f"the last complete checkpoint is {tmp_path}/checkpoints/1" in message
  assert out["save"] is None and out["close"] is None  # raised once; the next save tries again
  assert out["steps"] == [1, 3] and out["restored"] == 3


@pytest.fixture
def tiny_tmpfs(tmp_path, request):
  """A tmpfs with the mount options of `request.param`; skipped where one cannot be mounted."""
  mnt = tmp_path / "tmpfs"
  mnt.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", request.param, "tmpfs", str(mnt)],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
  yield mnt
  subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("tiny_tmpfs,second", [
    ("size=256k", "np.random.default_rng(0).random(1 << 17, np.float32)"),  # no space: async
    ("size=1m,nr_inodes=30", "np.ones(3, np.float32)"),  # no inodes: in save itself
], indirect=["tiny_tmpfs"], ids=["no_space", "no_inodes"])
def test_full_disk_raises_names_the_step_and_keeps_the_last_checkpoint(tiny_tmpfs, second):
  d = tiny_tmpfs / "checkpoints"
  out = _run_child(f"""
      d = {str(d)!r}
      ckpt = checkpoint_lib.Checkpointer(d, every_steps=1)
      ckpt.save(1, {{"a": jnp.arange(3.0)}}); ckpt.wait()
      out["save2"] = error(lambda: ckpt.save(2, {{"a": jnp.asarray({second})}}))
      out["after"] = error(lambda: (ckpt.save(3, {{"a": jnp.arange(3.0)}}), ckpt.wait()))
      out["close"] = error(ckpt.close)
      ckpt = checkpoint_lib.Checkpointer(d, read_only=True)
      step, state = ckpt.restore(jax.eval_shape(lambda: {{"a": jnp.arange(3.0)}}))
      out["restored"] = [step, np.asarray(state["a"]).tolist()]
      """)
  # The failure surfaces at the failing save or at the next call, naming step 2's directory.
  failure = out["save2"] or out["after"]
  assert failure is not None, out
  name, is_ckpt_error, message = failure
  assert is_ckpt_error, out
  assert message.startswith(f"{d}/2: checkpoint save failed: "), message
  assert f"the last complete checkpoint is {d}/1" in message and len(message) < 700
  assert out["close"] is None
  assert out["restored"] == [1, [0.0, 1.0, 2.0]]


# --- 2. Corrupt checkpoints.

@pytest.fixture(scope="module")
def three_steps(tmp_path_factory):
  """Checkpoints at steps 100, 200, 300 of _state(step), each after one more batch."""
  d = tmp_path_factory.mktemp("three") / "checkpoints"
  ckpt = Checkpointer(d, every_steps=100)
  it = _data_iterator()
  for step in (100, 200, 300):
    next(it)
    assert ckpt.save(step, _state(step), it)
  ckpt.close()
  return d


def _copy(three_steps, tmp_path):
  d = tmp_path / "checkpoints"
  shutil.copytree(three_steps, d)
  return d


def _overwrite(pattern, data=b"garbage"):
  files = glob.glob(pattern, recursive=True)
  assert files, pattern
  for f in files:
    pathlib.Path(f).write_bytes(data)


CORRUPTIONS = {
    "no_METADATA": lambda d: os.remove(d / "300/state/_METADATA"),
    "garbage_METADATA": lambda d: _overwrite(str(d / "300/state/_METADATA"), b"{"),
    "no_manifest": lambda d: os.remove(d / "300/state/manifest.ocdbt"),
    "garbage_arrays": lambda d: _overwrite(str(d / "300/state/**/d/*")),
    "empty_step": lambda d: (shutil.rmtree(d / "300"), (d / "300").mkdir()),
    "no_state": lambda d: shutil.rmtree(d / "300/state"),
    "garbage_data": lambda d: _overwrite(str(d / "300/data/process_0-of-1.json"), b"{not json"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_step_names_it_and_falls_back(three_steps, tmp_path, corruption):
  d = _copy(three_steps, tmp_path)
  CORRUPTIONS[corruption](d)
  ckpt = Checkpointer(d, every_steps=100, resume_hint="set --config.resume_step={step}")
  with pytest.raises(CheckpointError) as info:
    ckpt.restore(_abstract(_state()), _data_iterator())
  message = str(info.value)
  assert message.startswith(f"{d}/300/"), message
  assert ": cannot re" in message and len(message) < 600, message
  assert message.endswith("to resume from the previous checkpoint, set --config.resume_step=200")

  # An explicit earlier step restores, and so does the fallback, which sets step 300 aside.
  it = _data_iterator()
  step, state = ckpt.restore(_abstract(_state()), it, step=200)
  assert step == 200 and next(it) == 2
  it = _data_iterator()
  step, state = ckpt.restore(_abstract(_state()), it, fallback=True)
  assert step == 200 and next(it) == 2
  np.testing.assert_array_equal(state["params"]["w"], _state(200)["params"]["w"])
  assert ckpt.all_steps() == [100, 200]
  assert [p.name.split(".")[0] for p in d.glob("300.set-aside-*")] == ["300"]
  assert ckpt.save(300, _state(300), it)  # the step can be written again
  ckpt.close()
  assert Checkpointer(d, read_only=True).all_steps() == [100, 200, 300]


def test_fallback_without_any_good_step_sets_nothing_aside(three_steps, tmp_path):
  d = _copy(three_steps, tmp_path)
  for step in (100, 200, 300):
    os.remove(d / str(step) / "state" / "_METADATA")
  ckpt = Checkpointer(d)
  with pytest.raises(CheckpointError, match=f"^{d}/300/state: .*no earlier checkpoint restores"):
    ckpt.restore(_abstract(_state()), fallback=True)
  assert ckpt.all_steps() == [100, 200, 300] and not list(d.glob("*.set-aside-*"))


def test_huge_orbax_error_is_cut(three_steps, tmp_path, monkeypatch):
  ckpt = Checkpointer(_copy(three_steps, tmp_path))

  def restore(*args, **kwargs):
    raise ValueError("Structure mismatch: " + "('params', 'x'), " * 5000)
  monkeypatch.setattr(ckpt._manager, "restore", restore)  # pylint: disable=protected-access
  with pytest.raises(CheckpointError) as info:
    ckpt.restore(_abstract(_state()))
  message = str(info.value)
  assert message.startswith(f"{ckpt.directory}/300/state: cannot restore: ValueError: Struct")
  assert len(message) < 600, len(message)


def test_interrupted_save_tmp_dirs_are_not_steps(three_steps, tmp_path):
  d = _copy(three_steps, tmp_path)
  shutil.copytree(d / "300", d / "400.orbax-checkpoint-tmp")
  shutil.copytree(d / "300", d / "500.orbax-checkpoint-tmp-1700000000")
  ckpt = Checkpointer(d, every_steps=100)
  assert ckpt.all_steps() == [100, 200, 300] and ckpt.latest_step() == 300
  assert ckpt.restore(_abstract(_state()))[0] == 300
  assert ckpt.save(400, _state(400))  # over the stale tmp dir
  ckpt.close()
  assert Checkpointer(d, read_only=True).all_steps() == [200, 300, 400]  # keep=3


def test_missing_step(three_steps, tmp_path):
  ckpt = Checkpointer(_copy(three_steps, tmp_path))
  with pytest.raises(CheckpointError, match=r"/checkpoints/250: no checkpoint at step 250"):
    ckpt.restore(_abstract(_state()), step=250)
  with pytest.raises(FileNotFoundError):
    Checkpointer(tmp_path / "empty").restore(_abstract(_state()))


# --- 3. A state of another model config.

def _train_state(width, blocks=(0, 1), dtype=jnp.float32):
  params = {"encoder": {"blocks": {i: {"kernel": jnp.ones((width, 3 * width), dtype)}
                                   for i in blocks}},
            "bias": jnp.zeros(width, dtype)}
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  return {"step": jnp.int32(0), "params": params, "opt_state": opt.init(params)}


def test_compare_with_lists_the_differing_leaves(tmp_path):
  ckpt = Checkpointer(tmp_path / "checkpoints", async_save=False)
  ckpt.save(5, _train_state(4), force=True)
  assert ckpt.compare_with(_abstract(_train_state(4))) == []
  diffs = ckpt.compare_with(_abstract(_train_state(8, blocks=(0, 2), dtype=jnp.bfloat16)), 5)
  assert "params/encoder/blocks/0/kernel: saved (4, 12) float32, expected (8, 24) bfloat16" in diffs
  assert "params/bias: saved (4,) float32, expected (8,) bfloat16" in diffs
  assert "missing: params/encoder/blocks/2/kernel (expected (8, 24) bfloat16)" in diffs
  assert "unexpected: params/encoder/blocks/1/kernel (saved (4, 12) float32)" in diffs
  assert "opt_state/1/0/mu/encoder/blocks/0/kernel: saved (4, 12) float32, expected (8, 24) " \
         "bfloat16" in diffs

  with pytest.raises(StateMismatchError) as info:
    ckpt.restore(_abstract(_train_state(8)))
  message = str(info.value)
  assert message.startswith(f"{tmp_path}/checkpoints/5: the saved state does not fit")
  assert "params/encoder/blocks/0/kernel: saved (4, 12) float32, expected (8, 24) float32" in message
  assert "(and " in message and len(message) < 1000, len(message)
  assert len(info.value.differences) == 9

  # Only dtypes differ: restored with a cast.
  step, state = ckpt.restore(_abstract(_train_state(4, dtype=jnp.bfloat16)))
  assert step == 5 and state["params"]["bias"].dtype == jnp.bfloat16
  ckpt.close()


# --- What stays as it was.

def test_interval_keep_and_data_iterator(tmp_path):
  ckpt = Checkpointer(tmp_path / "checkpoints", keep=2, every_steps=3)
  it = _data_iterator()
  saved = []
  for step in range(1, 11):
    next(it)
    if ckpt.save(step, _state(step), it, force=step == 10):
      saved.append(step)
  ckpt.close()
  assert saved == [3, 6, 9, 10]
  ckpt = Checkpointer(tmp_path / "checkpoints", read_only=True)
  assert ckpt.all_steps() == [9, 10] and not ckpt.reached_preemption(10)
  it = _data_iterator()
  step, state = ckpt.restore(_abstract(_state()), it)
  assert step == 10 and next(it) == 10
  np.testing.assert_array_equal(state["params"]["w"], _state(10)["params"]["w"])
  assert not list((tmp_path / "checkpoints").glob(".write-test*"))
