"""Annotation adapters not covered by tests/test_prepare.py: HMDB51, Diving48, the VideoMAE list.

Indexing only: the video files are empty placeholders (nothing is decoded here).
"""

import json

import pytest

from input_pipeline import datasets
from input_pipeline import sources


def _touch(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"")


@pytest.fixture
def hmdb_root(tmp_path):
  splits = tmp_path / "testTrainMulti_7030_splits"
  splits.mkdir()
  (splits / "wave_test_split1.txt").write_text("w1.avi 1\nw2.avi 2\nw3.avi 0\n")
  (splits / "climb_test_split1.txt").write_text("c1.avi 1\nc2.avi 1\nc3.avi 2\n")
  (splits / "climb_test_split2.txt").write_text("c1.avi 2\n")
  for name in ("wave/w1.avi", "wave/w2.avi", "climb/c1.avi", "climb/c3.avi"):  # c2 missing
    _touch(tmp_path / "hmdb51" / name)
  return tmp_path


def test_hmdb51_splits_labels_and_missing(hmdb_root):
  train = datasets.load("hmdb51", hmdb_root, "train")
  assert train.class_names == ["climb", "wave"]  # sorted names
  assert sorted((e.path.split("hmdb51/")[1], e.label) for e in train.entries) == [
      ("climb/c1.avi", 0), ("wave/w1.avi", 1)]
  assert len(train.missing) == 1 and "c2.avi" in train.missing[0]
  test = datasets.load("hmdb51", hmdb_root, "test")
  assert sorted(e.label for e in test.entries) == [0, 1]  # c3 (climb), w2 (wave); w3 unused


def test_hmdb51_malformed_line_names_file_and_line(hmdb_root):
  (hmdb_root / "testTrainMulti_7030_splits" / "wave_test_split1.txt").write_text(
      "w1.avi 1\nw2.avi seven\n")
  with pytest.raises(sources.AnnotationError, match=r"wave_test_split1.txt:2"):
    datasets.load("hmdb51", hmdb_root, "train")


def test_diving48_labels_missing_and_errors(tmp_path):
  items = [{"vid_name": "a", "label": 3, "start_frame": 0, "end_frame": 10},
           {"vid_name": "b", "label": 47, "start_frame": 0, "end_frame": 10}]
  (tmp_path / "Diving48_V2_train.json").write_text(json.dumps(items, indent=1))
  _touch(tmp_path / "rgb" / "a.mp4")
  index = datasets.load("diving48", tmp_path, "train")
  assert [(e.label, e.path.endswith("rgb/a.mp4")) for e in index.entries] == [(3, True)]
  assert len(index.missing) == 1 and len(index.class_names) == 48
  items[1] = {"vid_name": "b", "label": "forty-seven"}
  (tmp_path / "Diving48_V2_train.json").write_text(json.dumps(items, indent=1))
  with pytest.raises(sources.AnnotationError, match=r"Diving48_V2_train.json:\d+"):
    datasets.load("diving48", tmp_path, "train")


def test_videomae_list(tmp_path):
  _touch(tmp_path / "v" / "x.mp4")
  (tmp_path / "train.txt").write_text("v/x.mp4 2\nv/y.mp4 0\n")
  index = datasets.load("list", tmp_path, str(tmp_path / "train.txt"))
  assert [e.label for e in index.entries] == [2] and len(index.missing) == 1
  assert len(index.class_names) == 3


def test_videomae_list_split_names_are_tfds_names(tmp_path):
  _touch(tmp_path / "v" / "x.mp4")
  for file, split in (("train.txt", "train"), ("val-1.list.txt", "val_1_list"), ("ß 2.txt", "_2")):
    (tmp_path / file).write_text("v/x.mp4 0\n")
    assert datasets.load("list", tmp_path, str(tmp_path / file)).split == split


def test_unknown_dataset():
  with pytest.raises(ValueError, match="unknown dataset"):
    datasets.load("imagenet", "/nowhere")
