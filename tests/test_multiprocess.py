"""Multi-process pretraining on CPU: 2 local processes (2 fake devices each) via launch/main.py.

The 2-process run must see the same global batches as a single-process run (grain shards the
global shuffled stream by position), so its losses equal the single-process losses; its
checkpoint (written by both processes) must restore in a single process.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import portpicker
import pytest

from mgm_jax import train
import test_train  # pylint: disable=g-bad-import-order  (tests/ is on sys.path under pytest)

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 3


@pytest.fixture(scope="module")
def videos(tiny_videos):
  return tiny_videos


def _config(videos, total_steps):
  config = test_train._config(videos, total_steps=total_steps, checkpoint_every=STEPS)
  config.data.num_threads = 1
  return config


def _write_config_file(config, path: pathlib.Path) -> pathlib.Path:
  """A config file for launch/main.py holding exactly `config`."""
  path.write_text(
      "import json\nimport ml_collections\n\n\ndef get_config():\n"
      f"  return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
  return path


def _losses(workdir) -> dict[int, float]:
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def _launch_two_processes(config_file, workdir, timeout=80):
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(
      [sys.executable, str(REPO / "launch" / "main.py"), f"--config={config_file}",
       f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}"],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} failed:\n{out[-4000:]}"
  return outputs


def test_two_processes_match_one_and_restore_in_one(videos, tmp_path):
  config = _config(videos, STEPS)
  multi = tmp_path / "multi"
  outputs = _launch_two_processes(_write_config_file(config, tmp_path / "cfg.py"), multi)
  assert "process 1 of 2" in outputs[1]

  single = tmp_path / "single"
  train.train(config, str(single))  # this pytest process: 1 process, 8 fake devices

  multi_losses, single_losses = _losses(multi), _losses(single)
  assert sorted(multi_losses) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([multi_losses[s] for s in sorted(multi_losses)],
                             [single_losses[s] for s in sorted(single_losses)], rtol=1e-5)
  # Only process 0 logs; both processes wrote their data-iterator state into the checkpoint.
  data_dir = multi / "checkpoints" / str(STEPS) / "data"
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data_dir))

  # Restore the 2-process checkpoint in 1 process and train on from it.
  resumed = train.train(_config(videos, STEPS + 1), str(multi))
  assert np.isfinite(resumed["loss"])
  assert sorted(_losses(multi)) == list(range(1, STEPS + 2))
