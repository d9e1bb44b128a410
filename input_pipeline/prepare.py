"""Preparing a data set once: transcode every video to motion-vector H.264, then write shards.

    prepare(dataset, src, out)   # launch/prepare_data.py is the command line

1. `datasets.load` lists each split's videos (missing ones are counted and reported). The splits
   are named as the indices name them; for `list`, after the list file's stem:
   `splits=("/data/lists/train.txt", "val.txt")` gives the splits `train` and `val`.
2. Worker processes transcode each video (`transcode.transcode_file`) to
   `{out}/videos/{split}/{name}.mp4`, written under a temporary name and renamed when complete:
   an interrupted run leaves no half-written video (a rerun deletes the temporary files), and a
   rerun skips every finished one (and the known failures, unless `retry_failed`).
3. Failures never stop the job; each is appended to `{out}/failures.jsonl` as
   {"split", "name", "error"}:
   - any exception transcoding a video (in its worker) fails that video;
   - a worker process that dies (FFmpeg crashing, the kernel killing it for memory) breaks the
     process pool, and every video in flight with it. Those are retried one at a time, alone in a
     one-worker pool: one that kills its worker again is failed, the others are done as usual;
     then the rest go on in a fresh pool. So a crashing video costs two tries, never a loop.
   A torn last line of failures.jsonl (a run killed while writing it) is dropped with a warning.
4. When every video of every split is done, a tensorflow-datasets builder writes ArrayRecord
   shards (encoded bytes + label + metadata) to `{out}/mgm_videos/{dataset}/1.0.0/`.
5. `{out}/report.json` sums it up: counts, missing and failed videos, throughput.

An exception in this process while videos are transcoding (KeyboardInterrupt, or whatever a
SIGTERM handler raises, as in launch/prepare_data.py) kills the worker processes, then
propagates; the finished videos stay. Workers ignore SIGINT: Ctrl-C is the parent's to handle.

`out` may be any path `etils.epath` supports (local, gs://, ...).
"""

from __future__ import annotations

import collections
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import signal
import time
from typing import Callable

from etils import epath
import tensorflow_datasets as tfds
import tqdm

from input_pipeline import datasets
from input_pipeline import tfds_builder
from input_pipeline import transcode

FAILURES = "failures.jsonl"
REPORT = "report.json"
_log = logging.getLogger(__name__)
_CRASHED = "its worker process died, in the pool and again alone (FFmpeg crashing? out of memory?)"


class PrepareError(ValueError):
  """A request or an `out` folder that preparation cannot go on with (the message says why)."""


@dataclasses.dataclass
class Result:
  """What one `prepare` call did."""

  done: int = 0  # transcoded or copied in this call
  copied: int = 0
  skipped: int = 0  # finished before this call
  failed: list = dataclasses.field(default_factory=list)  # dicts: split, name, error
  missing: dict = dataclasses.field(default_factory=dict)  # split -> [relative paths]
  complete: bool = False  # shards written
  seconds: float = 0.0
  workers: int = 1

  @property
  def videos_per_s_per_worker(self) -> float:
    return self.done / max(self.seconds, 1e-9) / max(self.workers, 1)


def _read_failures(out: epath.Path) -> dict:
  """(split, name) -> record of failures.jsonl. A torn last line is dropped (file rewritten)."""
  path = out / FAILURES
  if not path.exists():
    return {}
  lines = path.read_text().rstrip().splitlines()
  failures = {}
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      failures[(record["split"], record["name"])] = record
    except (ValueError, KeyError, TypeError) as e:
      if number < len(lines):
        raise PrepareError(f"{path}:{number}: not a failure record ({type(e).__name__}: {e}): "
                           f"{line!r:.80}; mend or delete the line, or pass retry_failed") from e
      _log.warning("%s: dropping the torn last line %r (a run killed while writing it)", path,
                   line)
      path.write_text("".join(f"{kept}\n" for kept in lines[:-1]))
  return failures


def _kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
  # ProcessPoolExecutor.kill_workers() comes with Python 3.14; until then, its process table.
  processes = list((pool._processes or {}).values())  # pylint: disable=protected-access
  for process in processes:
    process.kill()
  for process in processes:
    process.join()


def _run_pool(queue: collections.deque, workers: int, work: Callable, record: Callable) -> list:
  """Runs the queued tasks (popping them), at most `workers` at a time, record()ing each result.

  Returns [] when the queue is done, or the tasks that were in flight when a worker process died
  (a broken pool runs nothing more; the unsubmitted tasks stay queued).
  """
  pool = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"),  # safe beside threads (JAX)
      initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
  running = {}
  try:
    while queue or running:
      while queue and len(running) < workers:
        _, name, src, dst = task = queue.popleft()
        running[pool.submit(work, src, dst, name=name)] = task
      done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
        done, _ = concurrent.futures.wait(running)  # the others fail or finish now
      lost = []
      for future in done:
        task = running.pop(future)
        if isinstance(future.exception(), BrokenProcessPool):
          lost.append(task)
        else:
          record(task, *future.result())
      if lost:
        return lost
    return []
  except BaseException:
    _kill_workers(pool)  # interrupted (or a bug): no worker may outlive this process
    raise
  finally:
    pool.shutdown(cancel_futures=True)


def _transcode_all(tasks: list, workers: int, work: Callable, record: Callable) -> None:
  """Runs every task; isolates the videos in flight when a worker died (module docstring, 3.)."""
  queue = collections.deque(tasks)
  while queue:
    suspects = collections.deque(_run_pool(queue, workers, work, record))
    while suspects:
      for task in _run_pool(suspects, 1, work, record):
        record(task, "failed", _CRASHED)


def prepare(dataset: str, src: str, out: str, *, splits=("train",), fold: int = 1,
            settings: transcode.Settings = transcode.Settings(), workers: int | None = None,
            retry_failed: bool = False, stop_after: int | None = None, progress: bool = True,
            transcode_fn: Callable = transcode.transcode) -> Result:
  """Prepares `splits` of `dataset` found under `src` into `out` (see the module docstring).

  `stop_after`: return after transcoding that many videos (as an interruption would; tests).
  `transcode_fn`: a stand-in for `transcode.transcode`, run in the worker processes, so it must be
  a module-level function they can import (tests: one that crashes).

  Raises:
    FileNotFoundError: no folder `src`, or an annotation file is not there.
    sources.AnnotationError: a malformed annotation file (named, with the line).
    PrepareError: two list files give one split name, or failures.jsonl is corrupt.
  """
  tic = time.perf_counter()
  if src and not os.path.isdir(src):
    raise FileNotFoundError(f"{os.fspath(src)}: no such folder (src: the downloaded data set)")
  indices, asked = {}, {}
  for split in splits:
    index = datasets.load(dataset, src, split, fold=fold)
    if index.split in indices:
      raise PrepareError(f"{asked[index.split]} and {split} both give split {index.split!r}; "
                         "rename one")
    indices[index.split], asked[index.split] = index, split
  if not progress:
    tfds.disable_progress_bar()
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  workers = workers or os.cpu_count() or 1
  result = Result(workers=workers)
  failures = {} if retry_failed else _read_failures(out)
  if retry_failed and (out / FAILURES).exists():
    (out / FAILURES).unlink()

  tasks, finished = [], {}
  for split, index in indices.items():
    result.missing[split] = index.missing
    video_dir = out / "videos" / split
    video_dir.mkdir(parents=True, exist_ok=True)
    existing = set()
    for path in video_dir.iterdir():
      if path.name.rpartition(transcode.TMP_MARK)[2].isdigit():
        path.unlink()  # half-written by an interrupted run
      else:
        existing.add(path.name)
    for e in index.entries:
      dst = video_dir / f"{e.name.replace('/', '__')}.mp4"
      finished[(split, e.name)] = dst
      if dst.name in existing:
        result.skipped += 1
      elif (split, e.name) in failures:
        result.failed.append(failures[(split, e.name)])
      else:
        tasks.append((split, e.name, e.path, os.fspath(dst)))

  todo = tasks if stop_after is None else tasks[:stop_after]
  if todo:
    work = functools.partial(transcode.transcode_file, settings=settings,
                             transcode_fn=transcode_fn)
    with (out / FAILURES).open("a") as failure_log, tqdm.tqdm(
        total=len(todo), disable=not progress, unit="video",
        desc=f"transcoding {dataset}") as bar:

      def record(task, how, error):
        if error is None:
          result.done += 1
          result.copied += how == "copied"
        else:
          entry = {"split": task[0], "name": task[1], "error": error}
          result.failed.append(entry)
          failure_log.write(json.dumps(entry) + "\n")
          failure_log.flush()
        bar.update()

      _transcode_all(todo, min(workers, len(todo)), work, record)
  result.seconds = time.perf_counter() - tic

  # Shards only from a finished set. Rebuilt whenever this run added videos, so an earlier,
  # smaller build never shadows them.
  if len(todo) == len(tasks):
    failed = {(r["split"], r["name"]) for r in result.failed}
    splits_items = {
        split: [(finished[(split, e.name)], e.label, e.name) for e in index.entries
                if (split, e.name) not in failed and e.label >= 0]
        for split, index in indices.items()}
    # The longest list: `list` splits count the classes their own labels reach.
    class_names = max((index.class_names for index in indices.values()), key=len)
    tfds_builder.build(out, dataset, splits_items, class_names,
                       description=f"{dataset} prepared by mgm-jax: H.264, short side "
                       f"{settings.short_side}, GOP {settings.gop}, no B-frames, 1 reference",
                       overwrite=result.done > 0)
    result.complete = True
  _write_report(out, dataset, result, indices)
  return result


def _write_report(out, dataset, result: Result, indices) -> None:
  report = {
      "dataset": dataset, "complete": result.complete,
      "splits": {s: i.summary() for s, i in indices.items()},
      "done_this_run": result.done, "copied_this_run": result.copied,
      "finished_before": result.skipped, "seconds": round(result.seconds, 2),
      "videos_per_s_per_worker": round(result.videos_per_s_per_worker, 3),
      "failed": result.failed, "missing": result.missing}
  (out / REPORT).write_text(json.dumps(report, indent=2))
