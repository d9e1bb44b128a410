"""The run directory: where a run writes, who may write there, and which config it belongs to.

    workdir, logdir = run_dirs(path)       # checkpoints + config.json | metrics, images, videos
    with lock(logdir):                     # one run per workdir (released when the process dies)
      check_resumable(workdir, config)     # before anything is written: same run, or refuse
      write_config(workdir, config)        # config.json, replaced atomically

A workdir belongs to the config in its `config.json`. Relaunching it with a config that differs
in a field that defines the run (the model, the masks, the data, the optimizer: everything but
`schema.RESUMABLE`) is refused before anything is written, naming the fields; the checkpoints
and config.json stay as they were, so `inference.load` and the export keep working.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket

from absl import logging
from etils import epath
import ml_collections

from mgm_jax import schema

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


class WorkdirError(RuntimeError):
  """The workdir is in use by another run, or belongs to an incompatible config."""


def run_dirs(workdir: str) -> tuple[str, str]:
  """(workdir, logdir). Checkpoints and config.json go to `workdir`, which may be any path
  etils.epath and Orbax support (e.g. gs://...). Metrics, TensorBoard events, images and generated
  synthetic videos need a local file system: for a remote workdir they go to
  /tmp/mgm_logs/<workdir's last part> on process 0's host (copy them up yourself)."""
  if "://" not in workdir:
    workdir = os.path.abspath(workdir)
    return workdir, workdir
  logdir = os.path.join("/tmp/mgm_logs", workdir.rstrip("/").rsplit("/", 1)[-1])
  logging.warning("remote workdir %s: metrics, TensorBoard events and images go to %s",
                  workdir, logdir)
  return workdir, logdir


@contextlib.contextmanager
def lock(directory: str):
  """Holds an exclusive lock on `directory` (a local path) for the block.

  An advisory `fcntl.flock` on directory/.lock: the kernel releases it when the process ends,
  however it ends, so a crashed or killed run never leaves it stuck. The file names the holder
  (host and pid) for the error a second run gets.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      raise WorkdirError(f"{directory} is in use by another run ({holder}); wait for it to "
                         "end or choose another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # closing releases the lock


def _flatten(tree, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and prefix + key != "data.synthetic":  # synthetic: one value
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = list(value) if isinstance(value, (tuple, list)) else value
  return out


def _resumable(field: str) -> bool:
  return any(field == r or field.startswith(r + ".") for r in schema.RESUMABLE)


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a run was started with, from `workdir/config.json`.

  Fields the file lacks (added to the schema after the run started) get their schema default,
  which is the behaviour the run had. Taken as saved: `model` (a field it lacks means the
  size preset's or ModelConfig's default, which `model.model_config_from` applies) and
  `data.synthetic` (its keys are free).
  """
  path = epath.Path(workdir) / CONFIG_FILE
  try:
    saved = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path}: cannot read the run's config ({type(e).__name__}: {e})") from e
  return ml_collections.ConfigDict(_with_defaults(saved, json.loads(schema.defaults().to_json())))


def _with_defaults(saved: dict, default: dict, prefix: str = "") -> dict:
  out = dict(saved)
  for key, value in default.items():
    if prefix + key in ("model", "data.synthetic"):
      continue
    if key not in out:
      out[key] = value
    elif isinstance(value, dict) and isinstance(out[key], dict):
      out[key] = _with_defaults(out[key], value, f"{prefix}{key}.")
  return out


def config_differences(saved, config) -> list[str]:
  """'field: saved -> now' for every field that defines the run and differs.

  A field the saved config lacks (added to the schema after that run started) is no difference
  while it holds its default, which keeps the behaviour the run had.
  """
  old = _flatten(json.loads(saved.to_json()))
  new = _flatten(json.loads(config.to_json()))
  default = _flatten(json.loads(schema.defaults().to_json()))
  return [f"{f}: {old.get(f, '<absent>')!r} -> {new.get(f, '<absent>')!r}"
          for f in sorted(set(old) | set(new))
          if not _resumable(f) and old.get(f) != new.get(f)
          and not (f not in old and f in default and new.get(f) == default[f])]


def check_resumable(workdir: str, config) -> None:
  """Raises WorkdirError if `workdir` holds a run whose config defines another run."""
  if not (epath.Path(workdir) / CONFIG_FILE).exists():
    return
  diffs = config_differences(read_config(workdir), config)
  if diffs:
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    raise WorkdirError(f"{workdir} holds a run with another config ({shown}). Relaunch with "
                       "the run's own values, or choose another --workdir. Nothing was written.")


def write_config(workdir: str, config) -> None:
  """Writes workdir/config.json via a temporary file and a rename: never a torn file."""
  path = epath.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{CONFIG_FILE}.tmp-{os.getpid()}")
  tmp.write_text(config.to_json(indent=2))
  tmp.replace(path)
