"""Orbax checkpoints of the train state together with the data iterator's position.

A checkpoint at step s holds "state" (params, optimizer state, step; sharded arrays, written by
every process) and "data" (the grain iterator state, one JSON file per process), so a resumed run
sees exactly the batches the uninterrupted run would have seen. Saves are asynchronous, the last
`keep` are kept, and Orbax publishes a step only once it is complete: an interrupted save leaves
a `<step>.orbax-checkpoint-tmp` directory that is not a step and never shadows the previous good
checkpoint.

Failures are `CheckpointError`s, short and naming the path: an unusable directory at construction,
a failed save at the latest at the next `save`/`wait`/`close` (the step directories are created in
the blocking part of `save`, so a failure there raises at once and leaves no Orbax thread waiting
for them), a corrupt step or a state of another model config at `restore`.

Restoring onto another mesh: pass an abstract state whose leaves carry the new shardings
(`jax.ShapeDtypeStruct(shape, dtype, sharding=...)`). The data state is per process: it restores
only with the process count it was written with (grain's file naming); a run resumed on another
process count restarts its data stream from the beginning, with a warning (see `restore`).
"""

from __future__ import annotations

import logging
import os
import re
import time

from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(OSError):
  """A checkpoint that cannot be written or read; the message names its path."""


class StateMismatchError(CheckpointError):
  """The saved state does not fit the expected one (another model config): `differences`."""

  def __init__(self, message: str, differences: list[str]):
    super().__init__(message)
    self.differences = differences


def _short(e: BaseException, limit: int = 300) -> str:
  """`Type: message` on one line, without TensorStore specs, at most about `limit` characters."""
  text = re.sub(r"\s+", " ", str(e).split("[tensorstore_spec=")[0]).strip()
  if len(text) > limit:
    text = text[:limit] + " [...]"
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _flat(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """{"params/encoder/0/kernel": (shape, dtype)} for the leaves of a state or its metadata."""
  def name(k):
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  def dtype(leaf):
    return str(np.dtype(leaf.dtype)) if getattr(leaf, "dtype", None) is not None else "?"
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(name(k) for k in path): (tuple(np.shape(leaf)), dtype(leaf))
          for path, leaf in leaves}


def _describe(shape_dtype) -> str:
  return f"{shape_dtype[0]} {shape_dtype[1]}"


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for {"state", "data"} items.

  `read_only`: only restore (nothing is created or written; for loading a model).
  `resume_hint`: how the user resumes from an earlier step, appended to restore errors with
  `{step}` filled in, e.g. "set --config.resume_step={step}".
  """

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3, every_steps: int = 1000,
               async_save: bool = True, read_only: bool = False,
               resume_hint: str = "restore step={step} or pass fallback=True"):
    directory = os.fspath(directory)
    self.directory = directory if "://" in directory else os.path.abspath(directory)
    self.resume_hint = resume_hint
    self._pending = None  # the step of the async save in flight
    if not read_only:
      self._check_writable()
    # Save every `every_steps` and at preemption; `force=True` saves any step (e.g. the last).
    # (Orbax's default policy would also save the very first step.)
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(every_steps),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
    # Directories made in the background wait for each other with a 300 s timeout when one fails,
    # and those threads then block the interpreter's exit: make them in `save` itself.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=async_save, save_decision_policy=policy,
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def _check_writable(self) -> None:
    path = epath.Path(self.directory)
    try:
      if path.exists() and not path.is_dir():
        raise NotADirectoryError("exists and is not a directory")
      path.mkdir(parents=True, exist_ok=True)
      probe = path / f".write-test-{jax.process_index()}"
      probe.write_text("ok")
      probe.unlink()
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise CheckpointError(f"{path}: unusable checkpoint directory: {_short(e)}") from e

  def _step_dir(self, step: int) -> str:
    return str(epath.Path(self.directory) / str(step))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  # --- Saving.

  def _save_error(self, step: int | None, e: BaseException) -> CheckpointError:
    good = [s for s in self.all_steps() if s != step]
    last = f"the last complete checkpoint is {self._step_dir(good[-1])}" if good else (
        "no complete checkpoint was written")
    where = self.directory if step is None else self._step_dir(step)
    self._pending = None
    return CheckpointError(f"{where}: checkpoint save failed: {_short(e)}; {last}")

  def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
    """Saves if `step` is on the save interval (or `force`); returns whether it saved.

    Raises CheckpointError if this save fails to start or the previous (async) one failed. A
    failure is raised once; a later save tries again.
    """
    if not force and not self._manager.should_save(step):
      return False
    self.wait()
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
      saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._save_error(step, e) from e
    self._pending = step if saved else None
    return saved

  def wait(self) -> None:
    """Blocks until the save in flight is written (within Orbax's async timeout, 20 min).

    Raises CheckpointError naming its step if it failed; the earlier checkpoints are intact.
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._save_error(self._pending, e) from e
    self._pending = None

  def close(self) -> None:
    """Waits for the save in flight (raising as `wait` does) and releases the manager."""
    try:
      self.wait()
    finally:
      self._manager.close()  # (Orbax raises a failed save's error only once per thread)

  # --- Restoring.

  def _differences(self, abstract_state, step: int) -> list[tuple[bool, str]]:
    """(only the dtype differs, text) per differing leaf; see `compare_with`."""
    where = f"{self._step_dir(step)}/state"
    try:
      metadata = self._manager.item_metadata(step)
      metadata = metadata["state"] if "state" in metadata else None
      if metadata is None:
        raise FileNotFoundError("no state item or no _METADATA in it")
      saved = _flat(getattr(metadata, "tree", metadata))
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise CheckpointError(f"{where}: cannot read the saved tree: {_short(e)}") from e
    expected = _flat(abstract_state)
    diffs = []
    for path, want in expected.items():
      have = saved.get(path)
      if have is None:
        diffs.append((False, f"missing: {path} (expected {_describe(want)})", path))
      elif have != want:
        diffs.append((have[0] == want[0],
                      f"{path}: saved {_describe(have)}, expected {_describe(want)}", path))
    diffs += [(False, f"unexpected: {path} (saved {_describe(have)})", path)
              for path, have in saved.items() if path not in expected]
    # Shallowest first: params/... before the optimizer state that mirrors them.
    return [d[:2] for d in sorted(diffs, key=lambda d: d[2].count("/"))]

  def compare_with(self, abstract_state, step: int | None = None) -> list[str]:
    """The differences between `abstract_state` and the state saved at `step` (default latest),
    leaf by leaf, without reading any array; [] when they match.

    Each difference is one of "PATH: saved SHAPE DTYPE, expected SHAPE DTYPE",
    "missing: PATH (expected SHAPE DTYPE)" and "unexpected: PATH (saved SHAPE DTYPE)", with PATH
    like "params/encoder/blocks/0/attn/qkv/kernel". Raises CheckpointError if the metadata of
    that step cannot be read (a corrupt or incomplete checkpoint).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return [text for _, text in self._differences(abstract_state, step)]

  def _restore_step(self, abstract_state, data_iterator, step: int):
    diffs = self._differences(abstract_state, step)
    fatal = [text for dtype_only, text in diffs if not dtype_only]
    if fatal:
      more = f" (and {len(fatal) - 5} more)" if len(fatal) > 5 else ""
      raise StateMismatchError(
          f"{self._step_dir(step)}: the saved state does not fit the expected one (another "
          f"model config?): {'; '.join(fatal[:5])}{more}", fatal)
    if diffs:
      logging.warning("checkpoint %d: restoring with a dtype cast: %s", step,
                      "; ".join(text for _, text in diffs[:5]))
    try:
      state = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise CheckpointError(f"{self._step_dir(step)}/state: cannot restore: {_short(e)}") from e
    if data_iterator is None:
      return state
    data_file = (epath.Path(self._step_dir(step)) / "data" /
                 f"process_{jax.process_index()}-of-{jax.process_count()}.json")
    if not data_file.exists():
      logging.warning("checkpoint %d has no data state for %d processes: the data stream "
                      "restarts from its beginning", step, jax.process_count())
      return state
    try:
      self._manager.restore(step, args=ocp.args.Composite(
          data=grain.checkpoint.CheckpointRestore(data_iterator)))
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise CheckpointError(f"{data_file}: cannot restore: {_short(e)}") from e
    return state

  def restore(self, abstract_state, data_iterator=None, step: int | None = None, *,
              fallback: bool = False):
    """Restores `state` (laid out as `abstract_state` says) and, in place, the data iterator.

    Returns (step, state). `step`: that step (default the latest). The data iterator is restored
    only if the checkpoint has a state file for this process count; otherwise it is left at its
    start and a warning says so.

    Raises FileNotFoundError if there is no checkpoint; StateMismatchError (a CheckpointError)
    if the saved state has other leaves or shapes than `abstract_state` (other dtypes only: a
    cast, with a warning); CheckpointError naming the step directory if that step is corrupt,
    with `resume_hint` for the previous step. `fallback` (without `step`): a corrupt latest step
    is skipped with a warning for the newest earlier one that restores, and the skipped ones are
    set aside (see `set_aside`) so that the run can save those steps again. (Resuming a run at
    an explicit earlier `step`: set the newer steps aside too.)
    """
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if step is not None and step not in steps:
      raise CheckpointError(f"{self._step_dir(step)}: no checkpoint at step {step} "
                            f"(there are steps {steps})")
    candidates = [step] if step is not None else steps[::-1] if fallback else steps[-1:]
    first_error = None
    for s in candidates:
      try:
        state, error = self._restore_step(abstract_state, data_iterator, s), None
      except StateMismatchError:
        raise
      except CheckpointError as e:
        state, error = None, e
      if _everywhere(error is None):
        if first_error is not None:
          self.set_aside([t for t in steps if t > s])
        return s, state
      error = error or CheckpointError(f"{self._step_dir(s)}: cannot restore on another process")
      if first_error is None:
        first_error = error
      if s != candidates[-1]:
        logging.warning("%s; trying the previous checkpoint", error)
    earlier = [t for t in steps if t < candidates[0]]
    hint = ("; no earlier checkpoint restores either" if fallback and step is None else
            f"; to resume from the previous checkpoint, {self.resume_hint.format(step=earlier[-1])}"
            if earlier else "")
    raise CheckpointError(f"{first_error}{hint}") from first_error

  def set_aside(self, steps) -> list[str]:
    """Renames these step directories to `<step>.set-aside-<time>` (no longer steps, kept for
    inspection); returns the new paths. For resuming at an earlier step: set the newer ones
    aside, or saving them again would collide."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = [f"{self._step_dir(s)}.set-aside-{stamp}" for s in steps]
    if jax.process_index() == 0:
      for s, new in zip(steps, moved):
        try:
          epath.Path(self._step_dir(s)).rename(new)
        except Exception as e:  # pylint: disable=broad-exception-caught
          raise CheckpointError(f"{self._step_dir(s)}: cannot set it aside: {_short(e)}") from e
        logging.warning("set %s aside as %s", self._step_dir(s), new)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("mgm_jax.checkpoint.set_aside")
    self._manager.reload()
    return moved


def _everywhere(ok: bool) -> bool:
  """Whether `ok` holds on every process (all processes call this together)."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.process_allgather(np.int32(ok)).min())
