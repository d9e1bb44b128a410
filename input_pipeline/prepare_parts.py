"""Preparing one data set on N hosts: N disjoint parts, then one `finalize`.

    prepare.prepare(dataset, src, out, part=I, num_parts=N)   # on each of N hosts, I = 0..N-1
    prepare_parts.finalize(dataset, src, out, num_parts=N)    # once, anywhere, after them all

Part I transcodes the videos whose output `{split}/{file}` hashes to I (`prepare.owner`: SHA-256
of the name, mod N), so the shares are disjoint, cover every video, and are the same on every
host and every rerun whatever files exist or in which order the annotations list them. All
parts write into the same `{out}/videos/{split}/` (a shared file system, or gs://), each video
under a temporary name renamed when complete; a part deletes only its own share's leftover
temporary files. A part's own files, which no other part writes:

  failures.part-0000I-of-0000N.jsonl   its failures, as failures.jsonl
  report.part-0000I-of-0000N.json      its report, also its done marker: deleted when the part
                                       starts, written when it ends ("finished": true once
                                       every video of its share is done or failed)

A part rerun skips its finished videos; videos done by any earlier run (a single-host one, or
parts with another N) count as done, since their output files exist.

`finalize` refuses (PrepareError, one line naming the parts) unless every part's report says
finished and every video is done or failed; then it writes failures.jsonl (every failure
merged), the shards (`prepare.build_shards`: one process, reading ahead in threads) and
report.json (as a single-host run's, plus each part's counts). The transcoding settings come
from the parts' reports, which must agree.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time

from etils import epath
import tensorflow_datasets as tfds

from input_pipeline import prepare
from input_pipeline import transcode

_NAMED = 8  # unfinished parts named in finalize's error


def _unfinished(num_parts: int, reports: dict, tasks: list) -> list:
  """'part I (why)' for each part that is not finished."""
  waiting = collections.Counter(
      prepare.owner(split, epath.Path(dst).name, num_parts) for split, _, _, dst in tasks)
  problems = []
  for part in range(num_parts):
    why = []
    if reports[part] is None:
      why.append(f"no {prepare.part_file(prepare.REPORT, part, num_parts)}")
    elif not reports[part]["finished"]:
      why.append("stopped before its end")
    if waiting[part]:
      why.append(f"{waiting[part]} video{'s' * (waiting[part] > 1)} not done")
    if why:
      problems.append(f"part {part} ({', '.join(why)})")
  return problems


def finalize(dataset: str, src: str, out: str, *, num_parts: int, splits=("train",),
             fold: int = 1, progress: bool = True) -> prepare.Result:
  """Checks the `num_parts` parts of `out` all finished, then writes the shards (module doc).

  Raises:
    FileNotFoundError, sources.AnnotationError: as `prepare.prepare`.
    PrepareError: a part is not finished, the parts' settings differ, or num_parts < 2.
  """
  tic = time.perf_counter()
  if num_parts < 2:
    raise prepare.PrepareError(f"finalize with num_parts={num_parts}: it gathers the parts of a "
                               "num_parts > 1 preparation; a single-host run writes its shards")
  indices = prepare.load_indices(dataset, src, splits, fold)
  if not progress:
    tfds.disable_progress_bar()
  out = epath.Path(out)
  reports = {}
  for part in range(num_parts):
    path = out / prepare.part_file(prepare.REPORT, part, num_parts)
    reports[part] = json.loads(path.read_text()) if path.exists() else None
  failures = prepare.read_failures(out, own=None)
  result = prepare.Result(workers=0)
  tasks, outputs = prepare.scan(out, indices, failures, result, clean=False)
  problems = _unfinished(num_parts, reports, tasks)
  if problems:
    more = f", and {len(problems) - _NAMED} more" if len(problems) > _NAMED else ""
    raise prepare.PrepareError(
        f"{out}: {len(problems)} of {num_parts} parts not finished: "
        f"{', '.join(problems[:_NAMED])}{more}; run them (the same command with --part=I "
        "instead of --finalize), then finalize again")
  by_settings = collections.defaultdict(list)
  for part, report in reports.items():
    by_settings[json.dumps(report["settings"], sort_keys=True)].append(part)
  if len(by_settings) > 1:
    raise prepare.PrepareError("the parts were prepared with different settings: " + "; ".join(
        f"parts {parts}: {settings}" for settings, parts in by_settings.items()))
  settings = transcode.Settings(**json.loads(next(iter(by_settings))))

  kept = [r for (split, _), r in failures.items() if split not in indices]
  merged = "".join(json.dumps(r) + "\n" for r in kept + result.failed)
  tmp = out / f"{prepare.FAILURES}.tmp"
  tmp.write_text(merged)
  tmp.replace(out / prepare.FAILURES)
  prepare.build_shards(out, dataset, indices, outputs, result.failed, settings, overwrite=True)
  result.finished = result.complete = True
  result.seconds = time.perf_counter() - tic
  parts = {f"part-{part:05d}-of-{num_parts:05d}": {
      key: report[key] for key in ("done_this_run", "finished_before", "seconds",
                                   "videos_per_s_per_worker")} | {"failed": len(report["failed"])}
      for part, report in reports.items()}
  prepare.write_report(out / prepare.REPORT, dataset, result, indices, num_parts=num_parts,
                       settings=dataclasses.asdict(settings), parts=parts)
  return result
