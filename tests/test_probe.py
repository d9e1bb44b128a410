"""Frozen-feature evaluation (mgm_jax/probe.py): kNN, linear probe, top-k, feature files."""

import json
import os

import numpy as np
import pytest

from mgm_jax import probe


def _blobs(rng, num_classes, dim, n, spread=3.0, centers=None, offset=0.0):
  """Gaussian classes around random centres (returned, so that splits share them)."""
  if centers is None:
    centers = rng.normal(size=(num_classes, dim)) * spread
  y = rng.integers(0, num_classes, n)
  x = centers[y] + rng.normal(size=(n, dim)) + offset
  return x.astype(np.float32), y, centers


def _brute_knn(train_x, train_y, test_x, num_classes, k, temperature):
  """A direct loop over the test samples, in float64: DINO's votes, divided by their sum."""
  tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  out = np.zeros((len(test_x), num_classes))
  for i, q in enumerate(test_x.astype(np.float64)):
    sims = tr @ (q / np.linalg.norm(q))
    for j in np.argsort(-sims)[:min(k, len(tr))]:
      out[i, train_y[j]] += np.exp(sims[j] / temperature)
    out[i] /= out[i].sum()
  return out


# ------------------------------------------------------------------------------------ top-k


def test_topk_accuracy_ties_and_few_classes():
  scores = np.array([[0.1, 0.7, 0.2],    # label 1: rank 0
                     [0.5, 0.5, 0.0],    # label 1 ties with 0: the lower index wins -> rank 1
                     [0.6, 0.3, 0.1]])   # label 2: rank 2
  acc = probe.topk_accuracy(scores, np.array([1, 1, 2]), ks=(1, 2, 5))
  assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "top5": 1.0}
  with pytest.raises(ValueError):
    probe.topk_accuracy(scores, np.array([1, 1]))


# ------------------------------------------------------------------------------------ kNN


def test_knn_clustered_is_perfect_random_labels_is_chance():
  rng = np.random.default_rng(0)
  x, y, centers = _blobs(rng, 10, 32, 1000, spread=4.0)
  xt, yt, _ = _blobs(rng, 10, 32, 300, centers=centers)
  acc = probe.knn_accuracy(x, y, xt, yt, 10)
  assert acc["top1"] >= 0.99 and acc["top5"] == 1.0
  # Random labels on unstructured features: nothing to find.
  x = rng.normal(size=(2000, 32)).astype(np.float32)
  y = rng.integers(0, 10, 2000)
  xt = rng.normal(size=(1000, 32)).astype(np.float32)
  yt = rng.integers(0, 10, 1000)
  acc = probe.knn_accuracy(x, y, xt, yt, 10)
  assert abs(acc["top1"] - 0.1) < 0.04 and abs(acc["top5"] - 0.5) < 0.07


def test_knn_matches_brute_force_loop():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(60, 8)).astype(np.float32) * rng.uniform(0.1, 10, (60, 1))  # norms vary
  y = rng.integers(0, 5, 60)
  xt = rng.normal(size=(7, 8)).astype(np.float32)
  for k, temperature in [(6, 0.1), (20, 0.07), (1, 1.0)]:
    got = probe.knn_predict(x, y, xt, 5, k=k, temperature=temperature, batch_size=3)  # padded
    want = _brute_knn(x, y, xt, 5, k, temperature)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # Scale invariance: L2 normalisation happens inside.
  np.testing.assert_allclose(probe.knn_predict(3 * x, y, 0.5 * xt, 5),
                             probe.knn_predict(x, y, xt, 5), rtol=1e-5, atol=1e-7)


def test_knn_k_larger_than_train_set():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(5, 4)).astype(np.float32)
  y = np.array([0, 1, 1, 2, 2])
  xt = rng.normal(size=(3, 4)).astype(np.float32)
  got = probe.knn_predict(x, y, xt, 3, k=100)
  np.testing.assert_allclose(got, probe.knn_predict(x, y, xt, 3, k=5), rtol=1e-6)
  np.testing.assert_allclose(got, _brute_knn(x, y, xt, 3, 100, 0.07), rtol=1e-4, atol=1e-6)


def test_knn_temperature_trades_nearest_for_majority():
  # One class-0 neighbour at cosine 0.99, four class-1 neighbours at cosine 0.9.
  a0, a1 = np.arccos(0.99), np.arccos(0.9)
  x = np.array([[np.cos(a0), np.sin(a0)]] + [[np.cos(a1), s * np.sin(a1)] for s in (1, -1, 1, -1)],
               np.float32)
  y = np.array([0, 1, 1, 1, 1])
  q = np.array([[1.0, 0.0]], np.float32)
  sharp = probe.knn_predict(x, y, q, 2, k=5, temperature=0.01)  # exp(9) > 4: nearest wins
  flat = probe.knn_predict(x, y, q, 2, k=5, temperature=100.0)  # ~equal votes: majority wins
  assert sharp.argmax() == 0 and flat.argmax() == 1
  np.testing.assert_allclose(flat[0], [0.2, 0.8], atol=1e-3)
  np.testing.assert_allclose(sharp[0, 0], 1 / (1 + 4 * np.exp(-9.0)), rtol=1e-4)
  tiny = probe.knn_predict(x, y, q, 2, k=5, temperature=1e-4)  # exp(s/T) overflows float32
  assert np.all(np.isfinite(tiny)) and tiny[0, 0] == pytest.approx(1.0)


def test_knn_rejects_bad_labels():
  x = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    probe.knn_predict(x, np.array([0, 1, 2, 3]), x, 3)


# ------------------------------------------------------------------------------------ probe

_SWEEP = dict(lrs=(1e-7, 0.1, 1e38), weight_decays=(0.0, 1e-3), epochs=15, batch_size=64)


@pytest.fixture(scope="module")
def separable():
  """Linearly separable Gaussian classes (with an offset and uneven scales: standardisation
  matters) in train / val / test splits, and the sweep's result on them."""
  rng = np.random.default_rng(3)
  splits = []
  centers = None
  for n in (600, 300, 300):
    x, y, centers = _blobs(rng, 6, 24, n, spread=1.0, centers=centers, offset=20.0)
    splits.append((x * np.linspace(0.1, 10, 24, dtype=np.float32), y))
  (x, y), (xv, yv), _ = splits
  return splits, probe.linear_probe(x, y, xv, yv, 6, seed=0, **_SWEEP)


def test_linear_probe_separates_gaussian_classes(separable):
  splits, result = separable
  (x, _), (xv, yv), (xt, yt) = splits
  test = probe.topk_accuracy(probe.probe_predict(result, xt), yt)
  assert test["top1"] > 0.95 and result.val_top1 > 0.95
  # The stored standardisation is the train set's; predictions reproduce the table's val score.
  np.testing.assert_allclose(result.mean, x.mean(axis=0), rtol=1e-4)
  np.testing.assert_allclose(result.std, np.sqrt(x.var(axis=0) + 1e-6), rtol=1e-4)
  val = probe.topk_accuracy(probe.probe_predict(result, xv), yv)
  assert val["top1"] == pytest.approx(result.val_top1)
  assert result.weights.shape == (24, 6) and result.bias.shape == (6,)


def test_linear_probe_selects_by_validation(separable):
  _, result = separable
  table = {(row["lr"], row["weight_decay"]): row for row in result.table}
  assert len(table) == 6
  assert result.lr == 0.1 and result.weight_decay in (0.0, 1e-3)
  for wd in (0.0, 1e-3):
    assert table[(1e-7, wd)]["val_top1"] < 0.6          # underfits: barely moved from init
    assert table[(1e-7, wd)]["train_loss"] > 1.5        # ~log(6)
    assert table[(1e38, wd)]["diverged"]                # non-finite weights: never chosen
    assert table[(0.1, wd)]["train_loss"] < 0.2
  best = max((r for r in result.table if not r["diverged"]), key=lambda r: r["val_top1"])
  assert result.val_top1 == best["val_top1"]
  json.dumps(result.table)  # plain Python values


def test_linear_probe_is_deterministic_per_seed(separable):
  splits, result = separable
  (x, y), (xv, yv), _ = splits
  again = probe.linear_probe(x, y, xv, yv, 6, seed=0, **_SWEEP)
  np.testing.assert_array_equal(again.weights, result.weights)
  np.testing.assert_array_equal(again.bias, result.bias)
  assert json.dumps(again.table) == json.dumps(result.table)  # NaN-safe exact comparison
  other = probe.linear_probe(x, y, xv, yv, 6, seed=1, **_SWEEP)
  assert not np.array_equal(other.weights, result.weights)


def test_linear_probe_is_invariant_to_feature_scale_and_offset(separable):
  # Train-set standardisation (MAE's BatchNorm without affine) makes the probe see the same
  # inputs whatever the per-dimension scale and offset of the features.
  splits, result = separable
  (x, y), (xv, yv), (xt, _) = splits
  scale = np.geomspace(0.1, 10, 24).astype(np.float32)  # var stays >> the 1e-6 epsilon
  moved = lambda a: a * scale - 50.0
  other = probe.linear_probe(moved(x), y, moved(xv), yv, 6, seed=0, **_SWEEP)
  # (1 sample in 300 may flip where the weights barely left their random init: lr 1e-7.)
  assert [r["val_top1"] for r in other.table] == pytest.approx(
      [r["val_top1"] for r in result.table], abs=0.005)
  assert (other.lr, other.weight_decay) == (result.lr, result.weight_decay)
  # Not bit-equal: the 1e-6 epsilon and float32 rounding differ, and 15 epochs amplify that.
  np.testing.assert_allclose(probe.probe_predict(other, moved(xt)),
                             probe.probe_predict(result, xt), rtol=0.01, atol=0.05)


def test_linear_probe_rejects_mismatched_inputs():
  x = np.zeros((10, 4), np.float32)
  y = np.zeros(10, np.int64)
  with pytest.raises(ValueError, match="dimension"):
    probe.linear_probe(x, y, np.zeros((5, 3), np.float32), y[:5], 2)
  with pytest.raises(ValueError, match="labels"):
    probe.linear_probe(x, y[:9], x, y, 2)


# ------------------------------------------------------------------------------------ files


def test_save_load_round_trip(tmp_path):
  rng = np.random.default_rng(4)
  feats = rng.normal(size=(5, 7))                        # float64 in, float32 out
  labels = np.array([3, 0, 1, 1, 2], np.int32)
  ids = ["vidéo_001", "動画/クリップ 2", "a", "b" * 40, ""]
  meta = {"checkpoint": "/tmp/run/checkpoints/800", "split": "val", "views": [1, 3],
          "note": "ünïcode ✓"}
  path = tmp_path / "sub" / "val_features.npz"
  probe.save_features(path, feats, labels, ids, meta)
  f, l, i, m = probe.load_features(path)
  assert f.dtype == np.float32 and l.dtype == np.int64 and i.dtype.kind == "U"
  np.testing.assert_array_equal(f, feats.astype(np.float32))
  np.testing.assert_array_equal(l, labels)
  assert list(i) == ids and m == meta
  assert os.listdir(path.parent) == ["val_features.npz"]  # no temporary file left behind
  with np.load(path, allow_pickle=False) as raw:         # plain numpy, no project code
    assert json.loads(str(raw["meta"])) == meta and raw["features"].shape == (5, 7)
  probe.save_features(path, feats[:2], labels[:2], ids[:2], {})  # overwrite
  assert len(probe.load_features(path)[0]) == 2


def test_bad_feature_files_raise_value_error_naming_the_path(tmp_path):
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"this is not a zip file at all")
  with pytest.raises(ValueError, match="garbage.npz"):
    probe.load_features(garbage)

  good = tmp_path / "good.npz"
  probe.save_features(good, np.ones((3, 2)), [0, 1, 2], ["a", "b", "c"], {"k": 1})
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(good.read_bytes()[:200])
  with pytest.raises(ValueError, match="truncated.npz"):
    probe.load_features(truncated)

  other = tmp_path / "other.npz"
  np.savez(other, features=np.ones((3, 2), np.float32))
  with pytest.raises(ValueError, match="other.npz.*missing"):
    probe.load_features(other)

  uneven = tmp_path / "uneven.npz"
  np.savez(uneven, features=np.ones((3, 2), np.float32), labels=np.zeros(2, np.int64),
           video_ids=np.array(["a", "b", "c"]), meta=np.array("{}"), format=np.array(probe.FORMAT))
  with pytest.raises(ValueError, match="uneven.npz.*lengths"):
    probe.load_features(uneven)

  with pytest.raises(ValueError, match="bad.npz.*lengths"):
    probe.save_features(tmp_path / "bad.npz", np.ones((3, 2)), [0, 1], ["a", "b", "c"], {})
  with pytest.raises(ValueError, match="JSON"):
    probe.save_features(tmp_path / "bad.npz", np.ones((3, 2)), [0, 1, 2], ["a", "b", "c"],
                        {"x": object()})
  assert not (tmp_path / "bad.npz").exists()
