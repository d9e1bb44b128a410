"""Annotation adapters: a data set's official annotation files -> (video path, label) entries.

`load(name, root, split)` returns an `Index`: entries in annotation order, class names in label
order (the mapping name -> index is deterministic: the official index where the data set has one,
else sorted names), and the listed videos that are not on disk (counted and listed, not fatal).
A malformed annotation line raises `sources.AnnotationError` naming the file and line number.

Expected layouts under `root` (as the data sets are commonly downloaded):

  ssv2     labels/labels.json ({"template without brackets": "index"}),
           labels/{train,validation}.json ([{"id", "label", "template", "placeholders"}, ...]);
           videos 20bn-something-something-v2/{id}.webm. (The `something-something-v2-*.json`
           names are accepted too.)
  k400     {train,validate,test}.csv with header `label,youtube_id,time_start,time_end,split`
           (an extra `is_cc` column is fine); videos `{youtube_id}_{start:06d}_{end:06d}.mp4`
           anywhere under {train,val,test}/ (flat or in per-class folders). Classes: sorted names.
  ucf101   ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}; videos
           UCF-101/{Class}/v_{Class}_gXX_cXX.avi. classInd's 1-based indices, minus one.
  hmdb51   testTrainMulti_7030_splits/{class}_test_split{N}.txt (`video.avi 1|2|0`: 1 train,
           2 test, 0 unused); videos hmdb51/{class}/{video}.avi. Classes: sorted names.
  diving48 Diving48_V2_{train,test}.json ([{"vid_name", "label", "start_frame", "end_frame"}]);
           videos rgb/{vid_name}.mp4. Labels as given (48 classes).
  list     a VideoMAE list file `relative/path label` per line (root: the paths' base folder;
           split: the list file's path, absolute or relative to the working directory). The
           index's split name is the file's stem with runs of characters other than
           [a-zA-Z0-9_] replaced by "_" (a tensorflow-datasets split name): /data/train.txt ->
           `train`, val-1.txt -> `val_1`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re

from input_pipeline import sources

DATASETS = ("ssv2", "k400", "ucf101", "hmdb51", "diving48", "list")
_VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov")


@dataclasses.dataclass(frozen=True)
class Entry:
  path: str  # absolute (root joined)
  label: int
  name: str  # unique, file-system safe key (relative path without suffix)


@dataclasses.dataclass
class Index:
  """One split of a data set: the videos on disk, the class names and what is missing."""

  dataset: str
  split: str
  entries: list[Entry]
  class_names: list[str]
  missing: list[str]

  def summary(self) -> str:
    return (f"{self.dataset}/{self.split}: {len(self.entries)} videos, "
            f"{len(self.class_names)} classes, {len(self.missing)} missing")


def _fail(path, line, message):
  raise sources.AnnotationError(f"{path}:{line}: {message}")


def _read_json(path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    _fail(path, e.lineno, f"invalid JSON: {e.msg}")


def _json_item_lines(path) -> list[int]:
  """Line number where each top-level list item starts (for error messages)."""
  lines, depth, line = [], 0, 1
  with open(path, encoding="utf-8") as f:
    text = f.read()
  in_string = escape = False
  for ch in text:
    if ch == "\n":
      line += 1
    if in_string:
      escape = (ch == "\\") and not escape
      if ch == '"' and not escape:
        in_string = False
      continue
    if ch == '"':
      in_string = True
    elif ch in "[{":
      if depth == 1:
        lines.append(line)
      depth += 1
    elif ch in "]}":
      depth -= 1
  return lines


def _first(root, *candidates):
  for c in candidates:
    p = os.path.join(root, c)
    if os.path.exists(p):
      return p
  raise FileNotFoundError(f"none of {candidates} under {root}")


def _finish(dataset, split, root, listed, class_names) -> Index:
  """Keeps listed (relative path, label) pairs whose file exists; collects the others."""
  entries, missing = [], []
  for rel, label in listed:
    path = os.path.join(root, rel)
    if os.path.isfile(path):
      entries.append(Entry(path, label, os.path.splitext(rel)[0].replace(os.sep, "/")))
    else:
      missing.append(rel)
  return Index(dataset, split, entries, class_names, missing)


def ssv2(root, split="train") -> Index:
  labels_file = _first(root, "labels/labels.json", "labels/something-something-v2-labels.json",
                       "something-something-v2-labels.json")
  table = _read_json(labels_file)
  class_names = [name for name, _ in sorted(table.items(), key=lambda kv: int(kv[1]))]
  index = {name: int(i) for name, i in table.items()}
  split_name = {"val": "validation"}.get(split, split)
  ann = _first(root, f"labels/{split_name}.json",
               f"labels/something-something-v2-{split_name}.json",
               f"something-something-v2-{split_name}.json")
  items, lines = _read_json(ann), _json_item_lines(ann)
  video_dir = "20bn-something-something-v2"
  listed = []
  for k, item in enumerate(items):
    line = lines[k] if k < len(lines) else 0
    if not isinstance(item, dict) or "id" not in item or "template" not in item:
      _fail(ann, line, f"expected {{'id', 'template', ...}}, got {item!r:.80}")
    template = item["template"].replace("[", "").replace("]", "")
    if template not in index:
      _fail(ann, line, f"template {template!r} is not in {labels_file}")
    listed.append((f"{video_dir}/{item['id']}.webm", index[template]))
  return _finish("ssv2", split, root, listed, class_names)


def _k400_filename(youtube_id, start, end) -> str:
  return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"


def _files_by_stem(folder) -> dict[str, str]:
  found = {}
  for dirpath, _, files in os.walk(folder):
    for f in files:
      stem, suffix = os.path.splitext(f)
      if suffix.lower() in _VIDEO_SUFFIXES:
        found.setdefault(stem, os.path.join(dirpath, f))
  return found


def k400(root, split="train") -> Index:
  csv_name = {"val": "validate", "validation": "validate"}.get(split, split)
  ann = _first(root, f"{csv_name}.csv", f"annotations/{csv_name}.csv", f"kinetics400/{csv_name}.csv")
  rows = []
  with open(ann, encoding="utf-8", newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    need = ("label", "youtube_id", "time_start", "time_end")
    if header is None or any(n not in header for n in need):
      _fail(ann, 1, f"expected a header with {need}, got {header}")
    col = {n: header.index(n) for n in need}
    for number, row in enumerate(reader, start=2):
      if not row:
        continue
      try:
        label, yid = row[col["label"]], row[col["youtube_id"]]
        name = _k400_filename(yid, row[col["time_start"]], row[col["time_end"]])
      except (IndexError, ValueError):
        _fail(ann, number, f"expected label,youtube_id,time_start,time_end,..., got {row}")
      rows.append((label, name))
  # The label set of the train split (the test csv of some releases has no labels).
  class_names = sorted({label for label, _ in rows})
  if split != "train":
    try:
      class_names = k400(root, "train").class_names
    except FileNotFoundError:
      pass
  class_index = {n: i for i, n in enumerate(class_names)}
  folder = os.path.join(root, {"validate": "val"}.get(csv_name, csv_name))
  on_disk = _files_by_stem(folder if os.path.isdir(folder) else root)
  listed = []
  for label, name in rows:
    rel = os.path.relpath(on_disk[name], root) if name in on_disk else f"{csv_name}/{name}.mp4"
    listed.append((rel, class_index.get(label, -1)))
  return _finish("k400", split, root, listed, class_names)


def ucf101(root, split="train", fold: int = 1) -> Index:
  lists = _first(root, "ucfTrainTestlist", "UCF101TrainTestSplits-RecognitionTask/ucfTrainTestlist")
  video_dir = "UCF-101" if os.path.isdir(os.path.join(root, "UCF-101")) else ""
  class_file = os.path.join(lists, "classInd.txt")
  class_index = {}
  with open(class_file, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      m = re.fullmatch(r"(\d+)\s+(\S+)", line.strip())
      if not m:
        _fail(class_file, number, f"expected 'index ClassName', got {line.strip()!r}")
      class_index[m.group(2)] = int(m.group(1)) - 1
  class_names = [n for n, _ in sorted(class_index.items(), key=lambda kv: kv[1])]
  kind = "train" if split == "train" else "test"
  ann = os.path.join(lists, f"{kind}list{fold:02d}.txt")
  listed = []
  with open(ann, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      parts = line.split()
      if not parts:
        continue
      rel = parts[0]
      cls = rel.split("/")[0]
      if len(parts) > 2 or "/" not in rel or cls not in class_index:
        _fail(ann, number, f"expected 'Class/v_Class_gXX_cXX.avi [index]', got {line.strip()!r}")
      if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) - 1 != class_index[cls]):
        _fail(ann, number, f"label {parts[1]} disagrees with classInd.txt for {cls}")
      listed.append((os.path.join(video_dir, rel), class_index[cls]))
  return _finish("ucf101", split, root, listed, class_names)


def hmdb51(root, split="train", fold: int = 1) -> Index:
  lists = _first(root, "testTrainMulti_7030_splits", "splits")
  video_dir = "hmdb51" if os.path.isdir(os.path.join(root, "hmdb51")) else ""
  pattern = re.compile(rf"(.+)_test_split{fold}\.txt")
  files = sorted(f for f in os.listdir(lists) if pattern.fullmatch(f))
  class_names = sorted(pattern.fullmatch(f).group(1) for f in files)
  want = "1" if split == "train" else "2"
  listed = []
  for f in files:
    cls = pattern.fullmatch(f).group(1)
    ann = os.path.join(lists, f)
    with open(ann, encoding="utf-8") as fh:
      for number, line in enumerate(fh, start=1):
        parts = line.split()
        if not parts:
          continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
          _fail(ann, number, f"expected 'video.avi 0|1|2', got {line.strip()!r}")
        if parts[1] == want:
          listed.append((os.path.join(video_dir, cls, parts[0]), class_names.index(cls)))
  return _finish("hmdb51", split, root, listed, class_names)


def diving48(root, split="train") -> Index:
  kind = "train" if split == "train" else "test"
  ann = _first(root, f"Diving48_V2_{kind}.json", f"Diving48_{kind}.json")
  items, lines = _read_json(ann), _json_item_lines(ann)
  listed = []
  for k, item in enumerate(items):
    if not isinstance(item, dict) or "vid_name" not in item or not isinstance(
        item.get("label"), int):
      _fail(ann, lines[k] if k < len(lines) else 0,
            f"expected {{'vid_name', 'label': int, ...}}, got {item!r:.80}")
    listed.append((f"rgb/{item['vid_name']}.mp4", item["label"]))
  return _finish("diving48", split, root, listed, [str(i) for i in range(48)])


def list_split_name(list_file) -> str:
  """The split name of a list file (see the module docstring): val-1.txt -> val_1."""
  stem = os.path.splitext(os.path.basename(os.fspath(list_file)))[0]
  return re.sub(r"[^a-zA-Z0-9_]+", "_", stem)


def videomae_list(root, split) -> Index:
  src = sources.ListSource(split, root or None)
  listed = [(os.path.relpath(src[i]["path"], src.root), src[i]["label"]) for i in range(len(src))]
  num_classes = max(label for _, label in listed) + 1
  return _finish("list", list_split_name(split), src.root, listed,
                 [str(i) for i in range(num_classes)])


def load(dataset: str, root: str, split: str = "train", fold: int = 1) -> Index:
  """The annotated videos of one split (fold: the official split number for UCF101/HMDB51)."""
  root = os.fspath(root)
  if dataset == "ssv2":
    return ssv2(root, split)
  if dataset == "k400":
    return k400(root, split)
  if dataset == "ucf101":
    return ucf101(root, split, fold)
  if dataset == "hmdb51":
    return hmdb51(root, split, fold)
  if dataset == "diving48":
    return diving48(root, split)
  if dataset == "list":
    return videomae_list(root, split)
  raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


class IndexSource:
  """grain random-access source over an `Index` ({"path", "label"} records, raw videos)."""

  def __init__(self, index: Index):
    self.index = index

  def __len__(self) -> int:
    return len(self.index.entries)

  def __getitem__(self, i: int) -> dict:
    e = self.index.entries[i]
    return {"path": e.path, "label": e.label}

  def __repr__(self) -> str:
    return f"IndexSource({self.index.summary()})"
