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


def _launch(script, *args, processes=2, timeout=80):
  """launch/<script> in `processes` local processes of 2 fake CPU devices each (the
  jax.distributed flags added when several); returns their outputs, all exits checked 0."""
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  cluster = lambda i: ([f"--coordinator_address=127.0.0.1:{port}",
                        f"--num_processes={processes}", f"--process_id={i}"]
                       if processes > 1 else [])
  procs = [subprocess.Popen(
      [sys.executable, str(REPO / "launch" / script), *map(str, args), *cluster(i)],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(processes)]
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
  outputs = _launch("main.py", f"--config={_write_config_file(config, tmp_path / 'cfg.py')}",
                    f"--workdir={multi}")
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


def _evaluate_cli(workdir, out, processes):
  return _launch("evaluate.py", f"--workdir={workdir}", f"--out={out}", "--temporal_views=2",
                 "--spatial_views=1", "--batch_size=4", processes=processes, timeout=240)


def test_evaluate_in_two_processes_equals_one(tmp_path):
  """Each process evaluates its share; process 0's report equals a single process's."""
  import test_finetune  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=protected-access
  config = test_finetune._finetune_config(tmp_path / "videos", "")
  config.total_steps = 2
  config.eval.update(final_test=False, every_steps=0, num_videos=7)  # 7: padding in 2 batches
  workdir = tmp_path / "ft"
  train.train(config, str(workdir))
  _evaluate_cli(workdir, tmp_path / "one", 1)
  outputs = _evaluate_cli(workdir, tmp_path / "two", 2)
  for text in outputs:  # both processes joined one run
    assert text.strip().splitlines()[-1].startswith("top-1 ") and "2 process(es)" in text
  one = json.loads((tmp_path / "one" / "metrics.json").read_text())
  two = json.loads((tmp_path / "two" / "metrics.json").read_text())
  assert one["videos"] == two["videos"] == 7 and one["views"] == 2
  for key in ("top1", "top5", "top1_all", "per_class", "failed"):
    assert one[key] == two[key], key
  lines = lambda d: [json.loads(l) for l in (d / "predictions.jsonl").read_text().splitlines()]
  first, second = lines(tmp_path / "one"), lines(tmp_path / "two")
  assert [p["video"] for p in first] == [p["video"] for p in second]
  for a, b in zip(first, second):
    assert [c for c, _ in a["top5"]] == [c for c, _ in b["top5"]]
    np.testing.assert_allclose([s for _, s in a["top5"]], [s for _, s in b["top5"]], atol=1e-5)
