"""Tests of the grain pipeline: shapes, determinism, exact resume, process shards, broken videos."""

import os

import numpy as np
import pytest

from input_pipeline import pipeline
from input_pipeline import sources
from input_pipeline import synthetic
from mgm_jax import masking

SPEC = pipeline.ClipSpec(num_frames=4, stride=2, size=32, repeats=2, mask_strategy="mgm",
                         mask_ratio=0.5, tubelet=2, patch=16, flip=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline_videos")
  synthetic.make_dataset(root, 6, seed=1, list_name="train.txt", num_frames=12, height=48,
                         width=64, num_objects=2, object_size=(12, 20))
  return root


@pytest.fixture(scope="module")
def source(data_root):
  return sources.ListSource(data_root / "train.txt")


@pytest.fixture(scope="module")
def broken_source(data_root):
  """The six good videos plus three broken ones: garbage, empty, and a truncated copy."""
  (data_root / "garbage.mp4").write_bytes(os.urandom(3000))
  (data_root / "empty.mp4").write_bytes(b"")
  good = sorted((data_root / "videos").iterdir())[0].read_bytes()
  (data_root / "truncated.mp4").write_bytes(good[: len(good) // 3])
  lines = (data_root / "train.txt").read_text()
  lines += "garbage.mp4 0\nempty.mp4 1\ntruncated.mp4 2\n"
  (data_root / "with_broken.txt").write_text(lines)
  return sources.ListSource(data_root / "with_broken.txt")


def _batches(source, n, *, batch_size=4, seed=0, **kwargs):
  it = iter(pipeline.make_dataset(source, SPEC, batch_size=batch_size, seed=seed,
                                  num_threads=2, **kwargs))
  return [next(it) for _ in range(n)]


def _fingerprints(batch):
  """One hashable key per clip (frames + mask) of a flattened batch."""
  flat = pipeline.flatten_repeats(batch)
  return [f.tobytes() + m.tobytes() for f, m in zip(flat["frames"], flat["mask"])]


def test_batch_shapes_and_exact_mask_counts(source):
  batch = pipeline.flatten_repeats(_batches(source, 1)[0])
  assert batch["frames"].shape == (4, 4, 32, 32, 3) and batch["frames"].dtype == np.uint8
  assert batch["mask"].shape == (4, 2, 2, 2) and batch["mask"].dtype == bool
  expected = masking.num_masked("mgm", SPEC.token_grid, SPEC.mask_ratio)
  np.testing.assert_array_equal(batch["mask"].reshape(4, -1).sum(1), expected)
  assert batch["label"].shape == (4,) and batch["skipped"] == 0


def test_repeats_share_a_video_but_not_the_view(source):
  batch = _batches(source, 1, batch_size=2)[0]  # one video, two views
  assert batch["label"][0, 0] == batch["label"][0, 1]
  a, b = batch["frames"][0]
  assert not np.array_equal(a, b) or not np.array_equal(*batch["mask"][0])


def test_deterministic_by_seed(source):
  a, b = _batches(source, 3, seed=7), _batches(source, 3, seed=7)
  c = _batches(source, 3, seed=8)
  for x, y in zip(a, b):
    assert _fingerprints(x) == _fingerprints(y)
  assert any(_fingerprints(x) != _fingerprints(z) for x, z in zip(a, c))


def test_resume_gives_the_same_next_batches(source):
  ds = pipeline.make_dataset(source, SPEC, batch_size=4, seed=3, num_threads=2)
  it = iter(ds)
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]  # crosses an epoch boundary (6 videos, 2 per batch)
  resumed = iter(ds)
  resumed.set_state(state)
  for want in expected:
    assert _fingerprints(next(resumed)) == _fingerprints(want)


def test_process_shards_make_up_the_global_batch(source):
  whole = _batches(source, 3, batch_size=4)
  parts = [_batches(source, 3, batch_size=2, process_index=p, process_count=2) for p in (0, 1)]
  for k in range(3):
    assert sorted(_fingerprints(whole[k])) == sorted(
        _fingerprints(parts[0][k]) + _fingerprints(parts[1][k]))


def test_broken_videos_are_skipped_and_counted(broken_source):
  ds = pipeline.make_dataset(broken_source, SPEC, batch_size=2, seed=0, num_epochs=1,
                             num_threads=2)
  batches = list(ds)  # one epoch: 6 good videos (one per batch) and 3 broken ones
  assert len(batches) == 6
  assert sum(int(b["skipped"].sum()) for b in batches) == 3
  for b in batches:
    assert b["frames"].shape == (1, 2, 4, 32, 32, 3)


def test_annotation_errors_name_file_and_line(tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_text("a.mp4 1\nb c.mp4\t2\nno_label_here\n")  # tabs and spaces in paths are fine
  with pytest.raises(sources.AnnotationError, match=r"bad.txt:3"):
    sources.ListSource(bad)
  good = tmp_path / "good.txt"
  good.write_text("a.mp4 1\nb c.mp4\t2\n")
  record = sources.ListSource(good)[1]
  assert record["path"].endswith("b c.mp4") and record["label"] == 2
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  with pytest.raises(sources.AnnotationError, match="no videos"):
    sources.ListSource(empty)


def test_per_process_batch_must_hold_whole_repeats(source):
  with pytest.raises(ValueError, match="repeats"):
    pipeline.make_dataset(source, SPEC, batch_size=3, seed=0)


def test_each_file_is_probed_once_across_epochs_and_opened_once_per_clip(source, monkeypatch):
  from input_pipeline import decode  # pylint: disable=g-import-not-at-top
  calls, opens = [], []
  real_probe, real_open = decode.probe, decode.av.open
  monkeypatch.setattr(decode, "probe", lambda src, name=None: calls.append(src.source) or
                      real_probe(src, name=name))
  monkeypatch.setattr(decode.av, "open", lambda file, **kw: opens.append(file) or
                      real_open(file, **kw))
  load = pipeline.LoadClip(SPEC)
  rng = np.random.default_rng(0)
  for _ in range(2):  # two epochs over the six videos
    for i in range(len(source)):
      assert "failed" not in load.random_map(source[i], rng)
  paths = sorted(source[i]["path"] for i in range(len(source)))
  assert sorted(calls) == paths
  assert sorted(opens) == sorted(paths * 2)  # the probe and the decode share one open
