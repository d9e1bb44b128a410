"""Data set adapters, preparation (transcode -> ArrayRecord shards, resumable) and reading back;
failed and worker-killing videos, list splits, SIGTERM, parts + finalize (several hosts) and the
command line's errors.

Tiny fake SSv2 / Kinetics-400 / UCF101 trees: annotation files in the real formats, generated
videos (SSv2 as VP9 WebM, as shipped), one broken file and one missing video each.
"""

import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
from tensorflow_datasets.core import shuffle as tfds_shuffle

from input_pipeline import datasets
from input_pipeline import decode
from input_pipeline import pipeline
from input_pipeline import prepare
from input_pipeline import prepare_parts
from input_pipeline import sources
from input_pipeline import synthetic
from input_pipeline import transcode
from mgm_jax import schema
from mgm_jax import train
from mgm_jax import validate

REPO = pathlib.Path(__file__).resolve().parents[1]

VIDEO = dict(num_frames=10, height=48, width=64, num_objects=2, object_size=(12, 20))
SETTINGS = transcode.Settings(short_side=32, gop=8)

SSV2_LABELS = {"Pushing something from left to right": "0", "Holding something": "1",
               "Dropping something into something": "2"}


def _video(path, seed, codec="h264"):
  return synthetic.make_video(path, seed=seed, codec=codec, **VIDEO).path


def _ssv2_tree(root: pathlib.Path) -> pathlib.Path:
  (root / "labels").mkdir(parents=True)
  (root / "labels" / "labels.json").write_text(json.dumps(SSV2_LABELS, indent=1))
  train = [{"id": str(i), "label": f"thing {i}", "template": t, "placeholders": ["x"]}
           for i, t in zip(range(1, 7), ["Pushing [something] from left to right",
                                          "Holding [something]",
                                          "Dropping [something] into [something]",
                                          "Holding [something]", "Holding [something]",
                                          "Pushing [something] from left to right"])]
  (root / "labels" / "train.json").write_text(json.dumps(train, indent=1))
  videos = root / "20bn-something-something-v2"
  for i in range(1, 5):
    _video(videos / str(i), seed=i, codec="vp9")
  (videos / "5.webm").write_bytes(b"\x1aE\xdf\xa3 not really a webm")  # broken; 6 is missing
  return root


def _k400_tree(root: pathlib.Path) -> pathlib.Path:
  rows = [("abseiling", "aaaaaaaaaaa", 10, 20), ("zumba", "bbbbbbbbbbb", 0, 10),
          ("abseiling", "ccccccccccc", 5, 15), ("zumba", "ddddddddddd", 1, 11)]  # last: missing
  lines = ["label,youtube_id,time_start,time_end,split"]
  for k, (label, yid, start, end) in enumerate(rows):
    lines.append(f"{label},{yid},{start},{end},train")
    if k < 3:
      _video(root / "train" / label / f"{yid}_{start:06d}_{end:06d}", seed=10 + k)
  (root / "train.csv").write_text("\n".join(lines) + "\n")
  return root


def _ucf101_tree(root: pathlib.Path) -> pathlib.Path:
  lists = root / "ucfTrainTestlist"
  lists.mkdir(parents=True)
  classes = ["ApplyEyeMakeup", "Basketball", "YoYo"]
  (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
  train, test = [], []
  for i, c in enumerate(classes):
    for g in (8, 9):
      rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
      train.append(f"{rel} {i + 1}\n")
      path = _video(root / "UCF-101" / c / f"v_{c}_g{g:02d}_c01", seed=20 + 2 * i + g,
                    codec="mpeg4")
      path.rename(path.with_suffix(".avi"))
    test.append(f"{c}/v_{c}_g01_c01.avi\n")
  (lists / "trainlist01.txt").write_text("".join(train))
  (lists / "testlist01.txt").write_text("".join(test))
  return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
  base = tmp_path_factory.mktemp("raw")
  return {"ssv2": _ssv2_tree(base / "ssv2"), "k400": _k400_tree(base / "k400"),
          "ucf101": _ucf101_tree(base / "ucf101")}


# --- Adapters. ---

def test_ssv2_adapter_labels_missing_and_classes(trees):
  index = datasets.load("ssv2", trees["ssv2"], "train")
  assert index.class_names == list(SSV2_LABELS)
  assert [(e.name.split("/")[-1], e.label) for e in index.entries] == [
      ("1", 0), ("2", 1), ("3", 2), ("4", 1), ("5", 1)]  # 5 exists (broken): decoded later
  assert index.missing == ["20bn-something-something-v2/6.webm"]


def test_k400_adapter_finds_per_class_files_and_sorts_classes(trees):
  index = datasets.load("k400", trees["k400"], "train")
  assert index.class_names == ["abseiling", "zumba"]
  assert [e.label for e in index.entries] == [0, 1, 0]
  assert index.entries[0].path.endswith("train/abseiling/aaaaaaaaaaa_000010_000020.mp4")
  assert index.missing == ["train/ddddddddddd_000001_000011.mp4"]


def test_ucf101_adapter_uses_split_1_and_class_index(trees):
  train = datasets.load("ucf101", trees["ucf101"], "train")
  assert [e.label for e in train.entries] == [0, 0, 1, 1, 2, 2]
  test = datasets.load("ucf101", trees["ucf101"], "test")
  assert len(test.entries) == 0 and len(test.missing) == 3


@pytest.mark.parametrize("dataset,file,text,line", [
    ("ucf101", "ucfTrainTestlist/trainlist01.txt",
     "ApplyEyeMakeup/v_a.avi 1\nNoSuchClass/v_b.avi 2\n", 2),
    ("k400", "train.csv", "label,youtube_id,time_start,time_end,split\nzumba,x,1,2,train\n"
     "zumba,y,notanumber,3,train\n", 3),
    ("ssv2", "labels/train.json", '[\n {"id": "1", "template": "Holding [something]"},\n'
     ' {"id": "2"}\n]', 3),
])
def test_malformed_annotation_names_file_and_line(trees, tmp_path, dataset, file, text, line):
  root = tmp_path / dataset
  shutil.copytree(trees[dataset], root)
  (root / file).write_text(text)
  with pytest.raises(sources.AnnotationError, match=rf"{os.path.basename(file)}:{line}:"):
    datasets.load(dataset, root, "train")


# --- Preparation and reading. ---

def test_prepare_ssv2_interrupt_resume_and_read_back(trees, tmp_path):
  out = tmp_path / "prepared"
  first = prepare.prepare("ssv2", trees["ssv2"], out, settings=SETTINGS, workers=2,
                          stop_after=2, progress=False)
  assert (first.done, first.skipped, first.complete) == (2, 0, False)
  # A half-written file from the interruption is not mistaken for a finished video.
  (out / "videos" / "train" / "20bn-something-something-v2__3.mp4.tmp-1").write_bytes(b"x")

  second = prepare.prepare("ssv2", trees["ssv2"], out, settings=SETTINGS, workers=2,
                           progress=False)
  assert (second.done, second.skipped, second.complete) == (2, 2, True)
  assert [f["name"] for f in second.failed] == ["20bn-something-something-v2/5"]
  report = json.loads((out / "report.json").read_text())
  assert report["missing"]["train"] == ["20bn-something-something-v2/6.webm"]
  assert len(report["failed"]) == 1

  third = prepare.prepare("ssv2", trees["ssv2"], out, settings=SETTINGS, workers=2,
                          progress=False)
  assert (third.done, third.skipped, len(third.failed)) == (0, 4, 1)  # nothing redone

  source = sources.PreparedSource(out)
  assert source.class_names == list(SSV2_LABELS)
  expected = {"20bn-something-something-v2/1": 0, "20bn-something-something-v2/2": 1,
              "20bn-something-something-v2/3": 2, "20bn-something-something-v2/4": 1}
  records = [source[i] for i in range(len(source))]
  assert {r["name"]: r["label"] for r in records} == expected
  info = decode.probe(records[0]["video"])
  assert (info.codec, info.height, info.num_frames) == ("h264", 32, records[0]["num_frames"])
  assert info.width == 42  # 64 x 32/48, rounded to even

  spec = pipeline.ClipSpec(num_frames=4, stride=2, size=32, tubelet=2, patch=16, motion="mv")
  ds = pipeline.make_dataset(source, spec, batch_size=4, seed=0, num_epochs=1, num_threads=1)
  batch = next(iter(ds))
  assert batch["frames"].shape == (4, 1, 4, 32, 32, 3)
  labels = sorted(batch["label"].ravel().tolist())
  assert labels == sorted(expected.values())


def test_a_fixed_video_enters_the_rebuilt_shards(trees, tmp_path):
  src = tmp_path / "ssv2"
  shutil.copytree(trees["ssv2"], src)
  out = tmp_path / "prepared"
  first = prepare.prepare("ssv2", src, out, settings=SETTINGS, workers=1, progress=False)
  assert first.complete and len(sources.PreparedSource(out)) == 4  # video 5 is broken
  _video(src / "20bn-something-something-v2" / "5", seed=5, codec="vp9")  # the user fixes it
  again = prepare.prepare("ssv2", src, out, settings=SETTINGS, workers=1, progress=False,
                          retry_failed=True)
  assert (again.done, again.complete, again.failed) == (1, True, [])
  names = {r["name"] for r in map(sources.PreparedSource(out).__getitem__, range(5))}
  assert "20bn-something-something-v2/5" in names


def test_prepare_k400_copies_vector_codecs_and_ucf101_reads_back(trees, tmp_path):
  k400 = prepare.prepare("k400", trees["k400"], tmp_path / "k400", workers=1, progress=False,
                         settings=transcode.Settings(copy_compatible=True))
  assert (k400.done, k400.copied, k400.complete) == (3, 3, True)
  assert len(k400.missing["train"]) == 1
  ucf = prepare.prepare("ucf101", trees["ucf101"], tmp_path / "ucf", settings=SETTINGS,
                        workers=2, progress=False)
  assert (ucf.done, ucf.complete) == (6, True)
  source = sources.PreparedSource(tmp_path / "ucf", dataset="ucf101")
  labels = {source[i]["name"].split("/")[-1]: source[i]["label"] for i in range(len(source))}
  assert labels == {f"v_{c}_g{g:02d}_c01": i for i, c in
                    enumerate(["ApplyEyeMakeup", "Basketball", "YoYo"]) for g in (8, 9)}
  assert np.all([decode.probe(source[i]["video"]).codec == "h264" for i in range(len(source))])

  # configs/ucf101.py reads the shards through train.make_source.
  config = schema.load(str(REPO / "configs" / "ucf101.py"))
  config.data.prepared_dir = str(tmp_path / "ucf")
  validate.validate(config, num_devices=8)
  made = train.make_source(config, str(tmp_path / "work"))
  assert isinstance(made, sources.PreparedSource) and len(made) == 6


# --- Failures, list splits, interruptions. ---

def _list_tree(root: pathlib.Path, labels=(0, 1)) -> pathlib.Path:
  """`root/v{i}.mp4` with the given labels, listed in `root/train.txt`."""
  for i, _ in enumerate(labels):
    _video(root / f"v{i}", seed=30 + i)
  (root / "train.txt").write_text("".join(f"v{i}.mp4 {l}\n" for i, l in enumerate(labels)))
  return root


def _prepare_list(root, out, splits=("train.txt",), **kwargs):
  kwargs = {"settings": SETTINGS, "workers": 1, "progress": False, **kwargs}
  return prepare.prepare("list", root, out, splits=splits, **kwargs)


def _failure_log(out) -> list:
  return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def test_a_video_that_breaks_the_decoder_is_a_recorded_failure(tmp_path, monkeypatch):
  root = _list_tree(tmp_path / "raw", labels=(0, 1, 0))
  bad = root / "v1.mp4"
  bad.write_bytes(bad.read_bytes().replace(b"avc1", b"zzzz"))  # unknown sample entry: no codec
  monkeypatch.chdir(root)
  out = tmp_path / "out"
  result = _prepare_list(root, out, workers=2)
  assert (result.done, result.complete) == (2, True)
  assert [(f["split"], f["name"]) for f in result.failed] == [("train", "v1")]
  assert result.failed[0]["error"]  # the exception's type and message
  assert _failure_log(out) == result.failed
  assert json.loads((out / "report.json").read_text())["failed"] == result.failed
  assert sorted(sources.PreparedSource(out)[i]["name"] for i in range(2)) == ["v0", "v2"]
  again = _prepare_list(root, out)  # a known failure: not retried
  assert (again.done, again.skipped, again.failed, again.complete) == (0, 2, result.failed, True)


def test_any_exception_transcoding_fails_only_that_video(tmp_path):
  def broken(data, settings, name):
    raise AttributeError(f"{name}: 'NoneType' object has no attribute 'name'")
  dst = tmp_path / "out.mp4"
  assert transcode.transcode_file(str(_video(tmp_path / "v", seed=1)), str(dst), SETTINGS, "v",
                                  transcode_fn=broken) == (
      "failed", "AttributeError: v: 'NoneType' object has no attribute 'name'")
  assert not list(tmp_path.glob("out.mp4*"))


_CRASH_HOOK = '''
import os
from input_pipeline import transcode

def transcode_or_die(data, settings, name):
  """transcode.transcode, but the worker process dies on video {victim!r}."""
  if name == {victim!r}:
    with open({log!r}, "a") as f:
      f.write(name + "\\n")
    os._exit(3)
  return transcode.transcode(data, settings, name=name)
'''


def test_a_video_that_kills_its_worker_twice_is_a_recorded_failure(tmp_path, monkeypatch):
  root = _list_tree(tmp_path / "raw", labels=(0, 1, 0, 1))
  hooks, attempts = tmp_path / "hooks", tmp_path / "attempts.txt"
  hooks.mkdir()
  (hooks / "prepare_crash_hook.py").write_text(_CRASH_HOOK.format(victim="v1", log=str(attempts)))
  monkeypatch.syspath_prepend(str(hooks))  # spawned workers get the parent's sys.path
  hook = __import__("prepare_crash_hook")
  out = tmp_path / "out"
  result = _prepare_list(root, out, splits=(str(root / "train.txt"),), workers=2,
                         transcode_fn=hook.transcode_or_die)
  # v0 or v2 was in flight beside v1 when its worker died: retried, not failed.
  assert (result.done, result.complete) == (3, True)
  assert [f["name"] for f in result.failed] == ["v1"] and "died" in result.failed[0]["error"]
  assert attempts.read_text() == "v1\nv1\n"  # in the pool, then alone
  assert _failure_log(out) == result.failed
  again = _prepare_list(root, out, splits=(str(root / "train.txt"),),
                        transcode_fn=hook.transcode_or_die)
  assert (again.done, again.skipped, len(again.failed)) == (0, 3, 1)
  assert attempts.read_text() == "v1\nv1\n"  # not retried


def test_list_splits_from_absolute_and_relative_paths_read_back(tmp_path, monkeypatch):
  root = _list_tree(tmp_path / "raw", labels=(0, 1, 3))
  lines = (root / "train.txt").read_text().splitlines(keepends=True)
  lists = tmp_path / "lists"
  lists.mkdir()
  (lists / "train.txt").write_text("".join(lines[:2]))
  (lists / "val-1.txt").write_text(lines[2])  # label 3: more classes than train has
  monkeypatch.chdir(tmp_path)
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="both give split 'train'"):
    _prepare_list(root, out, splits=(str(lists / "train.txt"), "raw/train.txt"))
  result = _prepare_list(root, out, splits=(str(lists / "train.txt"), "lists/val-1.txt"))
  assert (result.done, result.complete, sorted(result.missing)) == (3, True, ["train", "val_1"])
  for split, names in (("train", ["v0", "v1"]), ("val_1", ["v2"])):
    source = sources.PreparedSource(out, split)
    records = [source[i] for i in range(len(source))]
    assert sorted(r["name"] for r in records) == names
    frames = decode.decode_frames(records[0]["video"], [0, 1, 2])
    assert frames.shape == (3, 32, 42, 3)
  assert source.class_names == ["0", "1", "2", "3"] and records[0]["label"] == 3


def test_a_torn_last_failure_line_is_dropped_a_corrupt_middle_line_raises(tmp_path, monkeypatch,
                                                                           caplog):
  root = _list_tree(tmp_path / "raw", labels=(0, 1))
  (root / "v1.mp4").write_bytes(b"not a video")
  monkeypatch.chdir(root)
  out = tmp_path / "out"
  assert [f["name"] for f in _prepare_list(root, out).failed] == ["v1"]
  log = out / "failures.jsonl"
  clean = log.read_text()
  log.write_text(clean + '{"split": "train", "na')  # killed mid-write
  with caplog.at_level("WARNING"):
    again = _prepare_list(root, out)
  assert (again.done, again.complete, [f["name"] for f in again.failed]) == (0, True, ["v1"])
  assert str(log) in caplog.text
  assert log.read_text() == clean  # rewritten clean
  log.write_text('{"split": "train", "na\n' + clean)
  with pytest.raises(ValueError, match=r"failures.jsonl:1:"):
    _prepare_list(root, out)


# --- Several hosts: parts, then finalize. ---

def _records(out) -> dict:
  """name -> (label, num_frames) of every example in the shards; each one decodes."""
  source = sources.PreparedSource(out)
  records = {}
  for r in map(source.__getitem__, range(len(source))):
    assert decode.decode_frames(r["video"], [0, r["num_frames"] - 1]).shape[0] == 2
    records[r["name"]] = (r["label"], r["num_frames"])
  return records


def _names(out, split="train") -> set:
  return {p.name for p in out.glob(f"videos/{split}/*.mp4")}


def test_three_parts_then_finalize_give_the_single_host_shards(trees, tmp_path, monkeypatch):
  single = prepare.prepare("ssv2", trees["ssv2"], tmp_path / "single", settings=SETTINGS,
                           workers=1, progress=False)
  out = tmp_path / "parts"
  run = lambda part: prepare.prepare("ssv2", trees["ssv2"], out, settings=SETTINGS, workers=1,
                                     progress=False, part=part, num_parts=3)
  finalize = lambda: prepare_parts.finalize("ssv2", trees["ssv2"], out, num_parts=3,
                                            progress=False)
  shares = {}
  for part in (0, 2, 1):
    if part == 1:  # 0 and 2 done: finalize names the one left
      with pytest.raises(prepare.PrepareError, match=r": 1 of 3 parts not finished: part 1 "
                         r"\(no report.part-00001-of-00003.json, 1 video not done\); run them"):
        finalize()
    before = _names(out)
    result = run(part)
    assert (result.finished, result.complete) == (True, False)
    shares[part] = _names(out) - before
  assert not (out / "mgm_videos").exists()  # no part writes shards
  # Each part did exactly its hash share; together, every video of the single-host run.
  assert {n: part for part, names in shares.items() for n in names} == {
      n: prepare.owner("train", n, 3) for n in _names(tmp_path / "single")}
  assert all(shares.values())  # (this tree gives every part a video)

  written = {p: p.stat().st_mtime_ns for p in out.glob("videos/train/*")}
  again = run(1)  # a rerun: nothing redone
  assert (again.done, again.skipped, again.finished) == (0, 1, True)
  assert {p: p.stat().st_mtime_ns for p in out.glob("videos/train/*")} == written

  # As with a split of over 1 GB: tfds spills to temporary files (without TensorFlow here).
  monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 0)
  result = finalize()
  assert (result.complete, result.skipped) == (True, 4)
  assert not list(out.glob("mgm_videos/**/bucket_*.tmp"))
  assert _records(out) == _records(tmp_path / "single") and len(_records(out)) == 4
  report = json.loads((out / "report.json").read_text())
  assert report["complete"] and report["failed"] == single.failed and len(single.failed) == 1
  assert report["missing"] == {"train": ["20bn-something-something-v2/6.webm"]}
  assert sorted(report["parts"]) == [f"part-0000{i}-of-00003" for i in range(3)]
  assert _failure_log(out) == single.failed  # merged
  broken = prepare.owner("train", prepare.output_name(single.failed[0]["name"]), 3)
  for part in range(3):  # the failure is in its own part's file only
    log = (out / prepare.part_file("failures.jsonl", part, 3)).read_text()
    assert bool(log) == (part == broken)


def test_parts_finish_a_single_host_run_and_keep_off_each_others_files(tmp_path, monkeypatch):
  root = _list_tree(tmp_path / "raw", labels=(0, 1, 0, 1, 0, 1))
  monkeypatch.chdir(root)
  out = tmp_path / "out"
  begun = _prepare_list(root, out, stop_after=2)  # a single-host run, interrupted
  assert (begun.done, begun.complete) == (2, False)
  owners = {f"v{i}.mp4": prepare.owner("train", f"v{i}.mp4", 2) for i in range(6)}
  tmp = {part: out / "videos" / "train" / f"{next(n for n, o in owners.items() if o == part)}"
         f"{transcode.TMP_MARK}999" for part in (0, 1)}
  for path in tmp.values():  # left by killed runs, or being written by a running part
    path.write_bytes(b"x")
  run = lambda part, **kw: _prepare_list(root, out, part=part, num_parts=2, **kw)

  first = run(0)
  assert first.done + first.skipped == sum(o == 0 for o in owners.values())
  assert not tmp[0].exists() and tmp[1].exists()  # part 1's temporary file is not part 0's
  assert run(1, stop_after=0).finished is False  # stopped at once
  with pytest.raises(prepare.PrepareError, match=r"1 of 2 parts not finished: part 1 \(stopped "
                     r"before its end, \d videos? not done\)"):
    prepare_parts.finalize("list", root, out, splits=("train.txt",), num_parts=2, progress=False)
  second = run(1)
  assert not tmp[1].exists()
  assert first.skipped + second.skipped == 2 and first.done + second.done == 4

  report = out / prepare.part_file("report.json", 1, 2)
  clean = report.read_text()
  report.write_text(clean.replace('"gop": 8', '"gop": 4'))
  with pytest.raises(prepare.PrepareError, match=r"different settings: parts \[0\]: .*"
                     r"\"gop\": 8.*; parts \[1\]: .*\"gop\": 4"):
    prepare_parts.finalize("list", root, out, splits=("train.txt",), num_parts=2, progress=False)
  report.write_text(clean)
  result = prepare_parts.finalize("list", root, out, splits=("train.txt",), num_parts=2,
                                  progress=False)
  assert result.complete and not result.failed
  assert {n: l for n, (l, _) in _records(out).items()} == {f"v{i}": i % 2 for i in range(6)}


def _cli(*args):
  return [sys.executable, str(REPO / "launch" / "prepare_data.py"), *args]


def _group_members(pgid: int) -> list[int]:
  """Live processes (not zombies) in process group `pgid`, from /proc/*/stat."""
  found = []
  for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
      text = stat.read_text()
    except OSError:  # gone meanwhile
      continue
    state, _, pgrp = text[text.rindex(")") + 2:].split()[:3]
    if int(pgrp) == pgid and state != "Z":
      found.append(int(stat.parent.name))
  return found


def test_sigterm_stops_the_workers_and_a_rerun_continues(tmp_path):
  root = tmp_path / "raw"
  video = synthetic.make_video(root / "v0", num_frames=20, height=120, width=160, seed=1).path
  for i in range(1, 6):
    shutil.copy(video, root / f"v{i}.mp4")
  (root / "train.txt").write_text("".join(f"v{i}.mp4 0\n" for i in range(6)))
  out = tmp_path / "out"
  command = _cli("--dataset=list", f"--src={root}", f"--out={out}", "--splits=train.txt",
                 "--workers=2", "--preset=placebo", "--short_side=120")  # slow: ~1 s a video
  proc = subprocess.Popen(command, cwd=root, start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while not list(out.glob("videos/*/*.mp4")):
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)  # the parent only
  _, err = proc.communicate(timeout=60)
  assert proc.returncode != 0 and "Traceback" not in err, err
  while _group_members(proc.pid):  # its workers
    assert time.monotonic() < deadline, _group_members(proc.pid)
    time.sleep(0.1)
  finished = list(out.glob("videos/*/*.mp4"))
  assert 1 <= len(finished) < 6
  for path in finished:  # complete files only
    assert decode.probe(path.read_bytes()).num_frames == 20

  rerun = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
  assert rerun.returncode == 0, rerun.stderr
  assert f"{6 - len(finished)} videos prepared" in rerun.stdout
  assert f"{len(finished)} done before" in rerun.stdout
  assert not list(out.glob("videos/*/*.tmp-*"))
  assert len(sources.PreparedSource(out)) == 6


def test_cli_parts_at_once_then_finalize(tmp_path):
  root = _list_tree(tmp_path / "raw", labels=(0, 1, 0, 1))
  out = tmp_path / "out"
  common = ["--dataset=list", f"--src={root}", f"--out={out}", "--splits=train.txt",
            "--short_side=32", "--gop=8", "--num_parts=2"]
  hosts = [subprocess.Popen(_cli(*common, "--workers=1", f"--part={part}"), cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for part in (0, 1)]  # at the same time, as on two hosts
  for part, host in enumerate(hosts):
    stdout, stderr = host.communicate(timeout=120)
    assert host.returncode == 0, stderr
    assert stdout.startswith(f"part {part} of 2: ") and "report.part-0000" in stdout
  final = subprocess.run(_cli(*common, "--finalize"), cwd=root, capture_output=True, text=True,
                         timeout=120)
  assert final.returncode == 0, final.stderr
  assert "4 videos in the shards from 2 parts, 0 failed, 0 missing" in final.stdout
  assert len(sources.PreparedSource(out)) == 4


@pytest.mark.parametrize("args,message", [
    (["--dataset=ucf101", "--src=/no/such/folder"], "/no/such/folder"),
    (["--dataset=list", "--src={root}", "--splits={root}/bad.txt"], "bad.txt:2:"),
    (["--dataset=list", "--src={root}", "--splits={root}/ok.txt", "--part=2", "--num_parts=2"],
     "part 2 of 2: need 0 <= part < num_parts"),
    (["--dataset=list", "--src={root}", "--splits={root}/ok.txt", "--finalize", "--num_parts=2"],
     "2 of 2 parts not finished: part 0 (no report.part-00000-of-00002.json), part 1 (no "),
])
def test_cli_expected_errors_are_one_line(tmp_path, args, message):
  (tmp_path / "bad.txt").write_text("a.mp4 0\nb.mp4 zero\n")
  (tmp_path / "ok.txt").write_text("a.mp4 0\n")  # listed, missing
  args = [a.format(root=tmp_path) for a in args]
  run = subprocess.run(_cli(*args, f"--out={tmp_path / 'out'}"), capture_output=True, text=True,
                       timeout=120)
  assert run.returncode != 0
  assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr, run.stderr


def test_transcode_sets_its_own_keyframes_whatever_the_source_had(tmp_path):
  """The output's GOP is the settings' (16), not the source's (5): frame types are not copied."""
  buffer = io.BytesIO()
  with av.open(buffer, mode="w", format="mp4") as out:
    stream = out.add_stream("libx264", rate=25, options={"g": "5", "keyint_min": "5",
                                                         "sc_threshold": "0"})
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    rng = np.random.default_rng(0)
    for i in range(40):
      image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
      out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    out.mux(stream.encode(None))
  data, how = transcode.transcode(buffer.getvalue(), transcode.Settings(short_side=48, gop=16))
  with av.open(io.BytesIO(data)) as container:
    keyframes = [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]
  assert how == "transcoded" and keyframes == [0, 16, 32]
