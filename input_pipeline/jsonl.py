"""JSON-lines files that a killed writer may have left with a torn last line.

The project appends records one line at a time (metrics.jsonl, failures.jsonl). A process killed
mid-write leaves the last line cut short: that line is dropped with a warning. Any other line
that is not JSON is real damage and raises ValueError naming the file and the line.
"""

from __future__ import annotations

import json
import logging

_log = logging.getLogger(__name__)


def parse(text: str, name: str) -> tuple[list[tuple[int, str, dict]], bool]:
  """([(line number, line, record), ...], whether a torn last line was dropped) of `text`.

  Blank lines are skipped; `name` (the file) is used in the warning and the error.
  """
  lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
  records = []
  for i, (number, line) in enumerate(lines):
    try:
      records.append((number, line, json.loads(line)))
    except ValueError as e:
      if i < len(lines) - 1:
        raise ValueError(f"{name}:{number}: not a JSON line ({e}): {line!r:.80}") from e
      _log.warning("%s: dropping its torn last line %r (a run killed while writing it)", name,
                   line[:80])
      return records, True
  return records, False
