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

Several hosts: `part=I, num_parts=N` does only part I's share of the videos (steps 1-3, into
the same folders, with the part's own failures and report files, no shards), then
`prepare_parts.finalize` does steps 4-5 once; see prepare_parts.py. Whatever the run, a video
counts as done when its output file exists, and failures are read from every failures*.jsonl.

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
import hashlib
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
from input_pipeline import jsonl
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
  finished: bool = False  # every video (of this part) done or failed
  complete: bool = False  # shards written
  seconds: float = 0.0
  workers: int = 1

  @property
  def videos_per_s_per_worker(self) -> float:
    return self.done / max(self.seconds, 1e-9) / max(self.workers, 1)


def output_name(name: str) -> str:
  """A video's file name in {out}/videos/{split}/."""
  return f"{name.replace('/', '__')}.mp4"


def owner(split: str, filename: str, num_parts: int) -> int:
  """The part that prepares {split}/{filename}: a hash of the name, the same on every host."""
  digest = hashlib.sha256(f"{split}/{filename}".encode()).digest()
  return int.from_bytes(digest[:8], "big") % num_parts


def part_file(filename: str, part: int, num_parts: int) -> str:
  """failures.jsonl -> failures.part-00001-of-00004.jsonl (itself for a single part)."""
  if num_parts == 1:
    return filename
  stem, _, suffix = filename.partition(".")
  return f"{stem}.part-{part:05d}-of-{num_parts:05d}.{suffix}"


def _read_failure_file(path: epath.Path, mend: bool) -> dict:
  """(split, name) -> record. A torn last line is dropped (with `mend`, the file rewritten)."""
  try:
    records, torn = jsonl.parse(path.read_text(), str(path))
  except ValueError as e:
    raise PrepareError(f"{e}; mend or delete the line, or pass retry_failed") from e
  failures = {}
  for number, line, record in records:
    try:
      failures[(record["split"], record["name"])] = record
    except (KeyError, TypeError) as e:
      raise PrepareError(f"{path}:{number}: not a failure record ({type(e).__name__}: {e}): "
                         f"{line!r:.80}; mend or delete the line, or pass retry_failed") from e
  if torn and mend:
    path.write_text("".join(f"{line}\n" for _, line, _ in records))
  return failures


def read_failures(out: epath.Path, own: str | None) -> dict:
  """Every failures*.jsonl in `out` merged; only this run's `own` file is ever rewritten."""
  failures = {}
  for path in sorted(out.glob("failures*.jsonl"), key=lambda p: (p.name == own, p.name)):
    failures.update(_read_failure_file(path, mend=path.name == own))
  return failures


def load_indices(dataset: str, src, splits, fold: int) -> dict:
  """split name -> datasets.Index."""
  if src and not os.path.isdir(src):
    raise FileNotFoundError(f"{os.fspath(src)}: no such folder (src: the downloaded data set)")
  indices, asked = {}, {}
  for split in splits:
    index = datasets.load(dataset, src, split, fold=fold)
    if index.split in indices:
      raise PrepareError(f"{asked[index.split]} and {split} both give split {index.split!r}; "
                         "rename one")
    indices[index.split], asked[index.split] = index, split
  return indices


def scan(out: epath.Path, indices: dict, failures: dict, result: Result, part: int = 0,
         num_parts: int = 1, clean: bool = True) -> tuple[list, dict]:
  """Sorts part `part`'s videos into finished, failed (`result`) and to do (the tasks returned).

  Returns (tasks, {(split, name): output path} for every video). With `clean`, deletes the
  temporary files of the part's share (interrupted runs); other parts may be writing theirs.
  """
  tasks, outputs = [], {}
  for split, index in indices.items():
    result.missing[split] = index.missing
    video_dir = out / "videos" / split
    video_dir.mkdir(parents=True, exist_ok=True)
    existing = set()
    for path in video_dir.iterdir():
      final, mark, pid = path.name.rpartition(transcode.TMP_MARK)
      if not (mark and pid.isdigit()):
        existing.add(path.name)
      elif clean and owner(split, final, num_parts) == part:
        path.unlink(missing_ok=True)  # half-written by an interrupted run
    for e in index.entries:
      dst = video_dir / output_name(e.name)
      outputs[(split, e.name)] = dst
      if owner(split, dst.name, num_parts) != part:
        continue
      if dst.name in existing:
        result.skipped += 1
      elif (split, e.name) in failures:
        result.failed.append(failures[(split, e.name)])
      else:
        tasks.append((split, e.name, e.path, os.fspath(dst)))
  return tasks, outputs


def build_shards(out: epath.Path, dataset: str, indices: dict, outputs: dict, failed: list,
                 settings: transcode.Settings, overwrite: bool) -> None:
  """Writes the shards of every video done (all of them: done or `failed`)."""
  failed = {(r["split"], r["name"]) for r in failed}
  splits_items = {
      split: [(outputs[(split, e.name)], e.label, e.name) for e in index.entries
              if (split, e.name) not in failed and e.label >= 0]
      for split, index in indices.items()}
  # The longest list: `list` splits count the classes their own labels reach.
  class_names = max((index.class_names for index in indices.values()), key=len)
  tfds_builder.build(out, dataset, splits_items, class_names,
                     description=f"{dataset} prepared by mgm-jax: H.264, short side "
                     f"{settings.short_side}, GOP {settings.gop}, no B-frames, 1 reference",
                     overwrite=overwrite)


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
            transcode_fn: Callable = transcode.transcode, part: int = 0,
            num_parts: int = 1) -> Result:
  """Prepares `splits` of `dataset` found under `src` into `out` (see the module docstring).

  `part`, `num_parts`: do only part `part` of `num_parts` (no shards; see prepare_parts.py).
  `stop_after`: return after transcoding that many videos (as an interruption would; tests).
  `transcode_fn`: a stand-in for `transcode.transcode`, run in the worker processes, so it must be
  a module-level function they can import (tests: one that crashes).

  Raises:
    FileNotFoundError: no folder `src`, or an annotation file is not there.
    sources.AnnotationError: a malformed annotation file (named, with the line).
    PrepareError: two list files give one split name, a failures file is corrupt, or no such
      part.
  """
  tic = time.perf_counter()
  if not (num_parts >= 1 and 0 <= part < num_parts):
    raise PrepareError(f"part {part} of {num_parts}: need 0 <= part < num_parts")
  indices = load_indices(dataset, src, splits, fold)
  if not progress:
    tfds.disable_progress_bar()
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  own_failures = part_file(FAILURES, part, num_parts)
  own_report = part_file(REPORT, part, num_parts)
  if num_parts > 1:
    (out / own_report).unlink(missing_ok=True)  # the part's done marker: unfinished from now on
  workers = workers or os.cpu_count() or 1
  result = Result(workers=workers)
  if retry_failed:  # a single host owns every failure; a part, its own file's
    for path in (out.glob("failures*.jsonl") if num_parts == 1 else [out / own_failures]):
      path.unlink(missing_ok=True)
  failures = {} if retry_failed else read_failures(out, own_failures)
  tasks, outputs = scan(out, indices, failures, result, part, num_parts)

  todo = tasks if stop_after is None else tasks[:stop_after]
  if todo:
    work = functools.partial(transcode.transcode_file, settings=settings,
                             transcode_fn=transcode_fn)
    where = f" part {part}/{num_parts}" if num_parts > 1 else ""
    with (out / own_failures).open("a") as failure_log, tqdm.tqdm(
        total=len(todo), disable=not progress, unit="video",
        desc=f"transcoding {dataset}{where}") as bar:

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
  result.finished = len(todo) == len(tasks)

  if num_parts > 1:
    write_report(out / own_report, dataset, result, indices, part=part, num_parts=num_parts,
                 settings=dataclasses.asdict(settings),
                 missing={s: len(m) for s, m in result.missing.items()})
    return result
  # Shards only from a finished set. Rebuilt whenever this run added videos, so an earlier,
  # smaller build never shadows them.
  if result.finished:
    build_shards(out, dataset, indices, outputs, result.failed, settings,
                 overwrite=result.done > 0)
    result.complete = True
  write_report(out / REPORT, dataset, result, indices)
  return result


def write_report(path: epath.Path, dataset, result: Result, indices, **extra) -> None:
  report = {
      "dataset": dataset, "finished": result.finished, "complete": result.complete,
      "splits": {s: i.summary() for s, i in indices.items()},
      "done_this_run": result.done, "copied_this_run": result.copied,
      "finished_before": result.skipped, "seconds": round(result.seconds, 2),
      "videos_per_s_per_worker": round(result.videos_per_s_per_worker, 3),
      "failed": result.failed, "missing": result.missing, **extra}
  tmp = path.with_name(f"{path.name}.tmp")  # a part's report is its done marker: never torn
  tmp.write_text(json.dumps(report, indent=2))
  tmp.replace(path)
