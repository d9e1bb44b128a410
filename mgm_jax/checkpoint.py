"""Orbax checkpoints of the train state together with the data iterator's position.

A checkpoint at step s holds "state" (params, optimizer state, step; sharded arrays, written by
every process) and "data" (the grain iterator state, one JSON file per process), so a resumed run
sees exactly the batches the uninterrupted run would have seen. Saves are asynchronous, the last
`keep` are kept, and Orbax publishes a step only once it is complete: an interrupted save never
shadows the previous good checkpoint.

Restoring onto another mesh: pass an abstract state whose leaves carry the new shardings
(`jax.ShapeDtypeStruct(shape, dtype, sharding=...)`). The data state is per process: it restores
only with the process count it was written with (grain's file naming); a run resumed on another
process count restarts its data stream from the beginning, with a warning (see `restore`).
"""

from __future__ import annotations

import logging
import os

from etils import epath
import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for {"state", "data"} items."""

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3, every_steps: int = 1000,
               async_save: bool = True):
    directory = os.fspath(directory)
    self.directory = directory if "://" in directory else os.path.abspath(directory)
    # Save every `every_steps` and at preemption; `force=True` saves any step (e.g. the last).
    # (Orbax's default policy would also save the very first step.)
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(every_steps),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        save_decision_policy=policy)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
    """Saves if `step` is on the save interval (or `force`); returns whether it saved."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state, data_iterator=None, step: int | None = None):
    """Restores `state` (laid out as `abstract_state` says) and, in place, the data iterator.

    Returns (step, state). The data iterator is restored only if the checkpoint has a state file
    for this process count; otherwise it is left at its start and a warning says so.
    """
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    data_file = (epath.Path(self.directory) / str(step) / "data" /
                 f"process_{jax.process_index()}-of-{jax.process_count()}.json")
    if data_iterator is not None and data_file.exists():
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    elif data_iterator is not None:
      logging.warning("checkpoint %d has no data state for %d processes: the data stream "
                      "restarts from its beginning", step, jax.process_count())
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return step, restored["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
