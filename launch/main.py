r"""Pretrains a video MAE with motion-guided masks.

    python launch/main.py --config=configs/demo.py --workdir=/tmp/mgm_demo
    python launch/main.py --config=configs/ssv2.py:800 --workdir=DIR \
        --config.data.list_file=... --config.mask.strategy=mgm --config.model.size=B

Started as several processes (one per host or GPU group), it initialises `jax.distributed` from
the flags below, or with no flags from the environment JAX's cluster detection understands
(Cloud TPU pod slices, SLURM `srun`, Open MPI): see launch/tpu_pod.sh and launch/slurm_gpu.sbatch.
`--distributed=auto` (default) initialises when the flags or such an environment say the job has
several processes; `yes` always (e.g. a single-host TPU slice started with gcloud --worker=all);
`no` never. Every process loads its share of each global batch; only process 0 writes metrics.

Exit status: 0 when the run finished or stopped early with a checkpoint (SIGTERM, preemption);
1 on any error. Errors a user can fix (config, workdir, data, checkpoint) print one line,
`error: ...`; anything else prints its traceback. Either way the process ends at once, whatever
background threads are still running.
"""

import logging as pylogging
import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from input_pipeline import decode
from input_pipeline import host_malloc
from input_pipeline import pipeline
from input_pipeline import sources
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import train
from mgm_jax import validate
from mgm_jax import workdir as workdir_lib
import distributed_flags  # launch/distributed_flags.py  # pylint: disable=g-bad-import-order

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and images go.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietOrbax(pylogging.Filter):
  """Orbax logs each checkpoint's internals at INFO through absl: keep only its warnings."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


# Failures a user can fix from the message alone: one line, no traceback.
_EXPECTED = (validate.ConfigError, workdir_lib.WorkdirError, checkpoint_lib.CheckpointError,
             train.NonFiniteLossError, train.SkippedVideosError, pipeline.BrokenDataError,
             decode.VideoDecodeError, sources.AnnotationError, FileNotFoundError)


def _exit(code: int) -> None:
  """Ends the process now: background threads (data loading, async saves) cannot keep it alive."""
  pylogging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def main(argv):
  try:
    _train(argv)
  except _EXPECTED as e:
    print(f"error: {e}", file=sys.stderr)
    _exit(1)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    _exit(1)
  _exit(0)


def _train(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  logging.info("%s", host_malloc.keep_freed_memory())  # fewer page faults per clip
  distributed_flags.initialize_distributed()
  logging.info("JAX %s: process %d of %d, %d local / %d global devices (%s)", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.default_backend())
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # one log stream: process 0's (warnings from all)
  train.train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
