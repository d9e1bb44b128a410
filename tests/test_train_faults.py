"""Faults a week-long run meets: broken data, a bad update, a second run, a changed config,
bad checkpoints, and what the command line says and returns for each.

Every test that could hang without its fix runs the trainer in a subprocess with a timeout.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

from flax import nnx
import jax
import numpy as np
import pytest

import test_train
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import inference
from mgm_jax import train
from mgm_jax import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _main(workdir, *flags, timeout=240, pythonpath=""):
  """launch/main.py on the demo config shrunk to a tiny clip; returns the CompletedProcess."""
  cmd = [sys.executable, str(REPO / "launch" / "main.py"), "--config=configs/demo.py:4",
         f"--workdir={workdir}", "--config.model.img_size=32", "--config.model.num_frames=4",
         "--config.batch_size=8", "--config.data.repeats=1", "--config.log_every=1",
         "--config.image_every=0", *flags]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  if pythonpath:
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _last_line(text: str) -> str:
  return [line for line in text.splitlines() if line.strip()][-1]


def test_all_videos_broken_stops_with_one_clear_line(tmp_path):
  for i in range(30):
    (tmp_path / f"bad{i}.mp4").write_bytes(b"not a video" * (i + 1))
  (tmp_path / "list.txt").write_text("".join(f"bad{i}.mp4 0\n" for i in range(30)))
  done = _main(tmp_path / "work", "--config.data.source=list",
               f"--config.data.list_file={tmp_path / 'list.txt'}",
               "--config.data.max_consecutive_failures=25")
  assert done.returncode == 1
  line = _last_line(done.stderr)
  assert line.startswith("error: 25 videos in a row failed to decode"), line
  assert "data.root" in line and "bad" in line
  assert done.stderr.count("skipping broken video") <= 25


def test_config_error_is_one_line_and_nothing_is_written(tmp_path):
  done = _main(tmp_path / "work", "--config.optim.grad_clip=-1.0", timeout=120)
  assert done.returncode == 1
  assert _last_line(done.stderr).startswith("error: config.optim.grad_clip: -1.0 must be >= 0")
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "work").exists()


def test_an_error_ends_the_process_whatever_threads_still_run(tmp_path):
  # A non-daemon thread that would keep a normally exiting interpreter alive for 10 minutes.
  (tmp_path / "sitecustomize.py").write_text(
      "import threading, time\n"
      "threading.Thread(target=time.sleep, args=(600,), daemon=False).start()\n")
  done = _main(tmp_path / "work", "--config.data.source=list",
               f"--config.data.list_file={tmp_path / 'missing.txt'}", timeout=120,
               pythonpath=str(tmp_path))
  assert done.returncode == 1
  assert "missing.txt" in _last_line(done.stderr)


@pytest.fixture(scope="module")
def videos(tiny_videos):
  return tiny_videos


def test_a_nonfinite_update_is_never_saved(videos, tmp_path):
  # An lr past float32's range from step 1 on: step 1's loss (computed before its update) is
  # finite, the parameters that update returns are not.
  config = test_train._config(videos, **{"optim.base_lr": 1e42, "optim.warmup_steps": 0,
                                         "optim.grad_clip": 0.0, "checkpoint_every": 1,
                                         "total_steps": 4})
  with pytest.raises(train.NonFiniteLossError, match="parameters or optimizer state after the update became non-finite at step 1 "):
    train.train(config, str(tmp_path))
  for step in checkpoint_lib.Checkpointer(tmp_path / "checkpoints").all_steps():
    params = jax.tree.leaves(nnx.state(inference.load(tmp_path, step).model))
    assert all(np.isfinite(np.asarray(p)).all() for p in params), step


def test_relaunch_with_another_model_is_refused_before_writing(videos, tmp_path):
  config = test_train._config(videos, total_steps=4)
  train.train(config, str(tmp_path), stop_after=2)
  saved = (tmp_path / "config.json").read_bytes()
  other = test_train._config(videos, total_steps=4, **{"model.encoder_dim": 64,
                                                       "mask.strategy": "tube"})
  with pytest.raises(workdir_lib.WorkdirError) as info:
    train.train(other, str(tmp_path))
  message = str(info.value)
  assert "model.encoder_dim: 32 -> 64" in message and "mask.strategy: 'mgm' -> 'tube'" in message
  assert len(message) < 1000
  assert (tmp_path / "config.json").read_bytes() == saved
  assert inference.load(tmp_path).step == 2
  # Fields that only say how the run goes may change: it resumes and finishes.
  train.train(test_train._config(videos, total_steps=4, log_every=2), str(tmp_path))
  assert checkpoint_lib.Checkpointer(tmp_path / "checkpoints").latest_step() == 4
  assert json.loads((tmp_path / "config.json").read_text())["log_every"] == 2


def test_a_second_run_on_the_same_workdir_is_refused(videos, tmp_path):
  config = test_train._config(videos)
  with workdir_lib.lock(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirError, match=f"pid {os.getpid()}"):
      train.train(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_a_killed_run_leaves_no_stuck_lock(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from mgm_jax import workdir\n"
       f"with workdir.lock({str(tmp_path)!r}):\n  print('held', flush=True); time.sleep(60)"],
      stdout=subprocess.PIPE, text=True, cwd=REPO)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(workdir_lib.WorkdirError, match="in use"):
    with workdir_lib.lock(str(tmp_path)):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait(timeout=30)
  with workdir_lib.lock(str(tmp_path)):  # the kernel released it with the process
    pass


def test_checkpoints_path_that_is_a_file_stops_at_start(videos, tmp_path):
  (tmp_path / "checkpoints").write_text("not a directory")
  with pytest.raises(checkpoint_lib.CheckpointError, match="checkpoints"):
    train.train(test_train._config(videos), str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_corrupt_latest_checkpoint_is_named_and_an_earlier_step_resumes(videos, tmp_path):
  config = test_train._config(videos, total_steps=6, checkpoint_every=2, keep_checkpoints=3)
  train.train(config, str(tmp_path), stop_after=4)
  assert checkpoint_lib.Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4]
  for f in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
    if f.is_file() and f.name != "_CHECKPOINT_METADATA":
      f.write_bytes(b"garbage")
  with pytest.raises(checkpoint_lib.CheckpointError) as info:
    train.train(config, str(tmp_path))
  assert str(tmp_path / "checkpoints" / "4") in str(info.value)
  assert "--config.resume_step=2" in str(info.value) and len(str(info.value)) < 1000
  final = train.train(test_train._config(videos, total_steps=6, checkpoint_every=2,
                                         keep_checkpoints=3, resume_step=2), str(tmp_path))
  assert checkpoint_lib.Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4, 6]
  assert list((tmp_path / "checkpoints").glob("4.set-aside-*"))  # kept for inspection
  want = test_train._losses(tmp_path)
  assert sorted(want) == list(range(1, 7)) and final["loss"] == want[6]
