"""Preparing a data set once: transcode every video to motion-vector H.264, then write shards.

    prepare(dataset, src, out)   # launch/prepare_data.py is the command line

1. `datasets.load` lists each split's videos (missing ones are counted and reported).
2. Worker processes transcode each video (`transcode.py`) to `{out}/videos/{split}/{name}.mp4`,
   written under a temporary name and renamed when complete: an interrupted run leaves no
   half-written video, and a rerun skips every finished one (and the known failures, unless
   `retry_failed`). A video that fails is appended to `{out}/failures.jsonl`; it never stops the
   job.
3. When every video of every split is done, a tensorflow-datasets builder writes ArrayRecord
   shards (encoded bytes + label + metadata) to `{out}/mgm_videos/{dataset}/1.0.0/`.
4. `{out}/report.json` sums it up: counts, missing and failed videos, throughput.

`out` may be any path `etils.epath` supports (local, gs://, ...).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import time

from etils import epath
import tensorflow_datasets as tfds
import tqdm

from input_pipeline import datasets
from input_pipeline import decode
from input_pipeline import tfds_builder
from input_pipeline import transcode

FAILURES = "failures.jsonl"
REPORT = "report.json"


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


def _work(task):
  """Worker: (src path, dst path, settings, name) -> (name, status, error or None)."""
  src, dst, settings, name = task
  try:
    with open(src, "rb") as f:
      data, how = transcode.transcode(f.read(), settings, name=name)
  except (decode.VideoDecodeError, OSError) as e:
    return name, "failed", str(e)
  dst = epath.Path(dst)
  tmp = dst.with_name(dst.name + f".tmp-{os.getpid()}")
  tmp.write_bytes(data)
  tmp.rename(dst)
  return name, how, None


def _read_failures(out: epath.Path) -> dict:
  path = out / FAILURES
  if not path.exists():
    return {}
  failures = {}
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      failures[(record["split"], record["name"])] = record
  return failures


def prepare(dataset: str, src: str, out: str, *, splits=("train",), fold: int = 1,
            settings: transcode.Settings = transcode.Settings(), workers: int | None = None,
            retry_failed: bool = False, stop_after: int | None = None,
            progress: bool = True) -> Result:
  """Prepares `splits` of `dataset` found under `src` into `out` (see the module docstring).

  `stop_after`: return after transcoding that many videos (as an interruption would; tests).
  """
  tic = time.perf_counter()
  if not progress:
    tfds.disable_progress_bar()
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  workers = workers or os.cpu_count() or 1
  result = Result(workers=workers)
  failures = {} if retry_failed else _read_failures(out)
  if retry_failed and (out / FAILURES).exists():
    (out / FAILURES).unlink()

  indices, tasks, finished = {}, [], {}
  for split in splits:
    index = datasets.load(dataset, src, split, fold=fold)
    indices[split] = index
    result.missing[split] = index.missing
    video_dir = out / "videos" / split
    video_dir.mkdir(parents=True, exist_ok=True)
    existing = {p.name for p in video_dir.iterdir()}
    for e in index.entries:
      dst = video_dir / f"{e.name.replace('/', '__')}.mp4"
      finished[(split, e.name)] = dst
      if dst.name in existing:
        result.skipped += 1
      elif (split, e.name) in failures:
        result.failed.append(failures[(split, e.name)])
      else:
        tasks.append((e.path, os.fspath(dst), settings, e.name, split))

  todo = tasks if stop_after is None else tasks[:stop_after]
  crashed = 0
  if todo:
    context = multiprocessing.get_context("spawn")  # safe beside threads (JAX, grain)
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)),
                                                mp_context=context) as pool, \
        (out / FAILURES).open("a") as failure_log:
      futures = {pool.submit(_work, t[:4]): (t[4], t[3]) for t in todo}
      bar = tqdm.tqdm(total=len(tasks), initial=0, disable=not progress, unit="video",
                      desc=f"transcoding {dataset}")
      for future in concurrent.futures.as_completed(futures):
        split, name = futures[future]
        try:
          name, how, error = future.result()
        except Exception as e:  # pylint: disable=broad-except
          # A crashed worker (e.g. FFmpeg aborting): reported, not logged as a known failure,
          # so the next run tries the video again.
          result.failed.append({"split": split, "name": name, "error": f"worker: {e!r}"})
          crashed += 1
          bar.update()
          continue
        if error is not None:
          record = {"split": split, "name": name, "error": error}
          result.failed.append(record)
          failure_log.write(json.dumps(record) + "\n")
          failure_log.flush()
        else:
          result.done += 1
          result.copied += how == "copied"
        bar.update()
      bar.close()
  result.seconds = time.perf_counter() - tic

  # Shards only from a finished set: nothing left to do and no crashed worker (whose videos the
  # next run retries). Rebuilt whenever this run added videos, so an earlier, smaller build
  # never shadows them.
  if len(todo) == len(tasks) and not crashed:
    failed = {(r["split"], r["name"]) for r in result.failed}
    splits_items = {
        split: [(finished[(split, e.name)], e.label, e.name) for e in index.entries
                if (split, e.name) not in failed and e.label >= 0]
        for split, index in indices.items()}
    class_names = next(iter(indices.values())).class_names
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
