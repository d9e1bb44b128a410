"""The flags that join a multi-process run, shared by the entry points that run on every host.

Imported by the scripts in launch/ (their folder is on sys.path when run as
`python launch/<script>.py`); `initialize_distributed()` must come before any JAX computation.
"""

from absl import flags

from mgm_jax import sharding

COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                  "host:port of process 0, for multi-process runs.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "yes", "no"],
                                "Initialise jax.distributed: auto = when several processes.")


def initialize_distributed() -> bool:
  """`sharding.initialize_distributed` as the flags say; returns whether it initialised."""
  return sharding.initialize_distributed(DISTRIBUTED.value, COORDINATOR.value,
                                         NUM_PROCESSES.value, PROCESS_ID.value)
