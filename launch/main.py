r"""Pretrains a video MAE with motion-guided masks.

    python launch/main.py --config=configs/demo.py --workdir=/tmp/mgm_demo
    python launch/main.py --config=configs/ssv2.py:800 --workdir=DIR \
        --config.data.list_file=... --config.mask.strategy=mgm --config.model.size=B

Started as several processes (one per host or GPU group), it initialises `jax.distributed` from
the flags below or from the environment JAX understands (TPU pods and SLURM need no flags).
"""

import logging as pylogging

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mgm_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and images go.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietOrbax(pylogging.Filter):
  """Orbax logs each checkpoint's internals at INFO through absl: keep only its warnings."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  if _NUM_PROCESSES.value and _NUM_PROCESSES.value > 1:
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  logging.info("JAX %s: process %d of %d, %d local / %d global devices (%s)", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.default_backend())
  train.train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
