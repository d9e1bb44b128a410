"""Where videos come from: random-access sources of video records for grain.

Records are {"path", "label"} (a file to decode) or {"video", "name", "label", "num_frames"}
(the encoded bytes, from prepared ArrayRecord shards: `PreparedSource`).

`ListSource` reads the VideoMAE annotation format: one video per line, `relative/path label`
(whitespace separated; a path may contain spaces, the label is the last field). Paths are taken
relative to `root`. A malformed line fails at construction with the file and line number.
"""

from __future__ import annotations

import os
import shutil

from input_pipeline import synthetic

# config.data.source: generated videos | a VideoMAE list file | prepared shards | a data set's own
# annotations (`datasets.load`).
KINDS = ("synthetic", "list", "prepared", "raw")


class AnnotationError(ValueError):
  """A malformed annotation file; the message names the file and the line."""


class ListSource:
  """grain random-access source over a VideoMAE-style list file."""

  def __init__(self, list_file: str | os.PathLike, root: str | os.PathLike | None = None):
    self.list_file = os.fspath(list_file)
    self.root = os.fspath(root) if root is not None else os.path.dirname(self.list_file)
    self._records = []
    with open(self.list_file, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
          continue
        path, label = (line.rsplit(None, 1) + [""])[:2]
        if not path or not label.lstrip("-").isdigit():
          raise AnnotationError(f"{self.list_file}:{number}: expected 'relative/path label', "
                                f"got {line!r}")
        self._records.append((os.path.join(self.root, path), int(label)))
    if not self._records:
      raise AnnotationError(f"{self.list_file}: no videos listed")

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    path, label = self._records[index]
    return {"path": path, "label": label}

  def __repr__(self) -> str:
    return f"ListSource({self.list_file!r}, {len(self)} videos)"


def synthetic_source(root: str | os.PathLike, num_videos: int, *, seed: int = 0,
                     **video_kwargs) -> ListSource:
  """Generates `num_videos` synthetic H.264 videos under root once (reused if present)."""
  root = os.fspath(root)
  list_file = os.path.join(root, "train.txt")
  if not os.path.exists(list_file):
    # Build beside, then publish with one rename: an interrupted generation is never mistaken
    # for a complete data set. Several processes may race here (multi-process runs): the
    # generation is deterministic, the first rename wins and the others discard their copy.
    partial = f"{root}.partial-{os.getpid()}"
    synthetic.make_dataset(partial, num_videos, seed=seed, list_name="train.txt", **video_kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    try:
      os.replace(partial, root)
    except OSError as e:
      shutil.rmtree(partial, ignore_errors=True)
      if not os.path.exists(list_file):
        raise OSError(f"cannot publish synthetic videos at {root}: it exists without "
                      f"train.txt ({e}); remove it or choose another data.root") from e
  return ListSource(list_file, root)


class PreparedSource:
  """grain random-access source over the ArrayRecord shards `prepare.py` wrote.

  `prepared_dir` is the `--out` of launch/prepare_data.py (or the versioned data set folder
  itself); `dataset` picks the data set under it when it holds several.
  """

  def __init__(self, prepared_dir: str | os.PathLike, split: str = "train",
               dataset: str | None = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from input_pipeline import tfds_builder  # pylint: disable=g-import-not-at-top
    self.directory = _dataset_directory(os.fspath(prepared_dir), dataset, tfds_builder)
    self.split = split
    builder = tfds.builder_from_directory(self.directory)
    self.class_names = builder.info.features["label"].names
    self._source = builder.as_data_source(split=split)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    example = self._source[index]
    name = example["name"]
    return {"video": example["video"], "label": int(example["label"]),
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "num_frames": int(example["num_frames"])}

  def __repr__(self) -> str:
    return f"PreparedSource({self.directory!r}, {self.split}, {len(self)} videos)"


def _dataset_directory(prepared_dir: str, dataset: str | None, tfds_builder) -> str:
  from etils import epath  # pylint: disable=g-import-not-at-top
  root = epath.Path(prepared_dir)
  if (root / "dataset_info.json").exists():
    return os.fspath(root)
  base = root / tfds_builder.NAME
  names = [dataset] if dataset else sorted(p.name for p in base.iterdir()) if base.exists() else []
  found = [d for d in (tfds_builder.dataset_dir(prepared_dir, n) for n in names)
           if (d / "dataset_info.json").exists()]
  if len(found) != 1:
    raise FileNotFoundError(
        f"{prepared_dir}: expected one prepared data set under {base} (dataset={dataset!r}), "
        f"found {[os.fspath(f) for f in found]}; run launch/prepare_data.py first")
  return os.fspath(found[0])
