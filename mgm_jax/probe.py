"""Frozen-feature evaluation: a weighted kNN and a swept linear probe, on feature arrays.

The model code extracts one feature vector per clip (or video); everything here works on plain
arrays: features float [N, D], integer labels [N] in [0, num_classes).

Feature files (`save_features` / `load_features`): one `.npz`, readable with `numpy.load` alone
(`allow_pickle=False`): "features" float32 [N, D], "labels" int64 [N], "video_ids" unicode [N],
"meta" (a 0-d unicode array holding a JSON object: checkpoint, split, view, ...) and "format"
("mgm_jax.features.v1"). Written to a temporary file in the same directory, then `os.replace`d,
so a reader never sees half a file. A file that is not such a file raises a ValueError naming it.

Weighted kNN (`knn_predict`), as DINO's `eval_knn.py` (facebookresearch/dino):
  * features L2-normalised inside (train and test), similarity = cosine = dot product;
  * the k = 20 most similar train samples vote (k is clipped to the train size);
  * a neighbour with similarity s votes exp(s / T) for its class, T = 0.07;
  * scores[c] = the sum of the votes for class c. We return them divided by their row sum (a
    distribution over classes): the same ranking as DINO's raw sums, and computed as
    exp((s - s_max) / T) so that no temperature overflows float32.
  Batched over the test set in JAX (one jitted matmul + `lax.top_k` per batch, full precision).

Linear probe (`linear_probe`), after MAE's `main_linprobe.py` (facebookresearch/mae):
  * the features are standardised with the train set's mean and std (std = sqrt(var + 1e-6)):
    MAE's BatchNorm1d(affine=False, eps=1e-6) before the head, with its statistics taken over the
    whole train set, i.e. that BatchNorm in eval mode with exact statistics. The mean/std are
    stored in the result and applied by `probe_predict`;
  * the head is a linear layer, weights truncated normal (std 0.01, cut at 2 std), bias 0 (MAE
    and MoCo v3 `trunc_normal_(std=0.01)`; DINO's `eval_linear.py` uses normal std 0.01);
  * loss: softmax cross-entropy; the same initial weights and the same minibatch order (seeded)
    for every setting of the sweep, so settings differ only by (lr, wd);
  * optimiser: SGD with momentum 0.9 (optax), weight decay added to the gradient of the weights
    only, not the bias (as MAE's LARS, `util/lars.py`), learning rate linearly warmed up over the
    first 10% of the steps then cosine-decayed to 0 (MAE's `lr_sched`: 10 of 90 warmup epochs;
    DINO `eval_linear.py`: SGD momentum 0.9 + cosine). Why not MAE's LARS: its trust ratio ties
    the step to |W|, tuned for batch 16384 over ImageNet's 1.28M images; a video data set's few
    thousand clips fit in memory, where plain SGD + momentum on standardised (well-conditioned)
    features converges in tens of epochs, and a small lr sweep replaces the batch-size scaling
    rule. Why not AdamW (SIGMA's `scripts_finetune/linear_probing_ssv2.sh`: lr 1e-3, wd 0.05):
    its per-coordinate scaling undoes part of the standardisation and its decoupled decay
    interacts with the lr sweep; SGD keeps the lr the only step-size knob;
  * minibatches: a fresh permutation per epoch, `N // batch_size` full batches (the remainder,
    different each epoch, is skipped in that epoch; MAE's loader uses drop_last=True);
  * the whole sweep is one jitted program: `lax.scan` over epochs and minibatches, `vmap` over the
    (lr, wd) settings, data in device memory. Deterministic for a given seed on one backend;
  * selection: the setting with the best validation top-1 (ties: lower validation loss, then the
    first in sweep order); a setting whose weights or loss became non-finite is marked
    `diverged` and never chosen. The final-epoch weights are used (no early stopping).

Recommended protocol: run the sweep with `val_x, val_y` from a held-out split of the TRAIN set
(e.g. 10% of the train videos), never the test split; then report the chosen probe once on the
test split with `probe_predict` + `topk_accuracy`. (DINO's `eval_linear.py` reports the best
epoch on the evaluation set itself, which is optimistic.)

`topk_accuracy`: fraction (in [0, 1]) of samples whose label is among the k highest scores;
ties are broken towards the lower class index (as a stable sort); with k >= num_classes every
sample counts (top-5 of a 3-class problem is 1.0).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

FORMAT = "mgm_jax.features.v1"
BN_EPS = 1e-6


# ---------------------------------------------------------------------------- feature files


def save_features(path, features, labels, video_ids, meta: Mapping[str, Any] | None = None):
  """Writes one `.npz` feature file atomically (see the module docstring for its layout)."""
  path = os.fspath(path)
  feats = np.asarray(features)
  labs = np.asarray(labels)
  ids = np.asarray(video_ids)
  if feats.ndim != 2 or not (np.issubdtype(feats.dtype, np.floating) or
                             np.issubdtype(feats.dtype, np.integer)):
    raise ValueError(f"{path}: features must be a real [N, D] array, got {feats.dtype} "
                     f"{feats.shape}")
  if labs.ndim != 1 or not np.issubdtype(labs.dtype, np.integer):
    raise ValueError(f"{path}: labels must be an integer [N] array, got {labs.dtype} "
                     f"{labs.shape}")
  if ids.ndim != 1:
    raise ValueError(f"{path}: video_ids must be 1-D, got shape {ids.shape}")
  if not len(feats) == len(labs) == len(ids):
    raise ValueError(f"{path}: lengths disagree: features {len(feats)}, labels {len(labs)}, "
                     f"video_ids {len(ids)}")
  try:
    meta_json = json.dumps(dict(meta or {}), ensure_ascii=False)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: meta is not JSON-serialisable: {e}") from e
  arrays = {
      "features": feats.astype(np.float32),
      "labels": labs.astype(np.int64),
      "video_ids": ids.astype(str) if len(ids) else np.zeros((0,), "<U1"),
      "meta": np.array(meta_json),
      "format": np.array(FORMAT),
  }
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_features(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
  """(features float32 [N, D], labels int64 [N], video_ids str [N], meta dict) from `path`."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such feature file")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ValueError (pickled), ...
    raise ValueError(f"{path}: not a feature file (.npz): {type(e).__name__}: {e}") from e
  missing = {"features", "labels", "video_ids", "meta", "format"} - set(arrays)
  if missing:
    raise ValueError(f"{path}: not a feature file: missing {sorted(missing)}")
  if str(arrays["format"]) != FORMAT:
    raise ValueError(f"{path}: unknown feature file format {str(arrays['format'])!r}")
  feats, labs, ids = arrays["features"], arrays["labels"], arrays["video_ids"]
  if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating):
    raise ValueError(f"{path}: features must be float [N, D], got {feats.dtype} {feats.shape}")
  if labs.ndim != 1 or not np.issubdtype(labs.dtype, np.integer):
    raise ValueError(f"{path}: labels must be integer [N], got {labs.dtype} {labs.shape}")
  if ids.ndim != 1 or ids.dtype.kind != "U":
    raise ValueError(f"{path}: video_ids must be unicode [N], got {ids.dtype} {ids.shape}")
  if not len(feats) == len(labs) == len(ids):
    raise ValueError(f"{path}: lengths disagree: features {len(feats)}, labels {len(labs)}, "
                     f"video_ids {len(ids)}")
  try:
    meta = json.loads(str(arrays["meta"]))
  except ValueError as e:
    raise ValueError(f"{path}: meta is not JSON: {e}") from e
  if not isinstance(meta, dict):
    raise ValueError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
  return feats.astype(np.float32), labs.astype(np.int64), ids, meta


# ---------------------------------------------------------------------------- checks, metrics


def _check_xy(name: str, x, y, num_classes: int, dim: int | None = None):
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2 or len(x) == 0:
    raise ValueError(f"{name}: features must be a non-empty [N, D] array, got shape {x.shape}")
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f"{name}: feature dimension {x.shape[1]} != train dimension {dim}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: features contain NaN or inf")
  if y is None:
    return x, None
  y = np.asarray(y)
  if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name}: labels must be integer [{len(x)}], got {y.dtype} {y.shape}")
  if len(y) and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got "
                     f"[{y.min()}, {y.max()}]")
  return x, y.astype(np.int32)


def topk_accuracy(scores, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
  """{"top1": ..., "top5": ...}: fractions; ties go to the lower class index; k >= C: all."""
  scores = np.asarray(scores)
  labels = np.asarray(labels).astype(np.int64)
  if scores.ndim != 2 or labels.shape != (len(scores),):
    raise ValueError(f"scores [N, C] and labels [N] expected, got {scores.shape}, "
                     f"{labels.shape}")
  n, c = scores.shape
  if n == 0:
    raise ValueError("topk_accuracy of an empty set")
  own = scores[np.arange(n), labels][:, None]
  before = np.arange(c)[None, :] < labels[:, None]
  # Position of the label in a stable descending sort: higher scores, then equal ones before it.
  rank = np.sum(scores > own, axis=1) + np.sum((scores == own) & before, axis=1)
  return {f"top{k}": float(np.mean(rank < min(k, c))) for k in ks}


# ---------------------------------------------------------------------------- kNN


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_batch(query, train, train_y, temperature, *, k: int, num_classes: int):
  sims = jnp.matmul(query, train.T, precision=jax.lax.Precision.HIGHEST)
  # The barrier keeps XLA (CPU) from rewriting top_k + the slice below into a full sort (~10x).
  top_s, top_i = jax.lax.optimization_barrier(jax.lax.top_k(sims, k))
  votes = jnp.exp((top_s - top_s[:, :1]) / temperature)  # DINO's exp(s/T), times a row constant
  rows = jnp.arange(query.shape[0])[:, None]
  scores = jnp.zeros((query.shape[0], num_classes), jnp.float32)
  scores = scores.at[rows, train_y[top_i]].add(votes)
  return scores / jnp.sum(scores, axis=1, keepdims=True)


def _l2n(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_x, train_y, test_x, num_classes: int, *, k: int = 20,
                temperature: float = 0.07, batch_size: int = 1024) -> np.ndarray:
  """DINO-style weighted kNN class scores [N_test, num_classes] (rows sum to 1)."""
  if k < 1 or not temperature > 0 or batch_size < 1:
    raise ValueError(f"need k >= 1, temperature > 0, batch_size >= 1; got {k}, {temperature}, "
                     f"{batch_size}")
  train_x, train_y = _check_xy("train", train_x, train_y, num_classes)
  test_x, _ = _check_xy("test", test_x, None, num_classes, dim=train_x.shape[1])
  k = min(k, len(train_x))
  train = jnp.asarray(_l2n(train_x))
  train_y = jnp.asarray(train_y)
  test_x = _l2n(test_x)
  bs = min(batch_size, len(test_x))
  out = []
  for start in range(0, len(test_x), bs):
    chunk = test_x[start:start + bs]
    pad = bs - len(chunk)  # pad the last batch: one compiled shape
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), np.float32)])
    scores = _knn_batch(jnp.asarray(chunk), train, train_y, jnp.float32(temperature), k=k,
                        num_classes=num_classes)
    out.append(np.asarray(scores)[:bs - pad])
  return np.concatenate(out)


def knn_accuracy(train_x, train_y, test_x, test_y, num_classes: int, *, k: int = 20,
                 temperature: float = 0.07, batch_size: int = 1024) -> dict[str, float]:
  """{"top1", "top5"} (fractions) of `knn_predict` on the test set."""
  scores = knn_predict(train_x, train_y, test_x, num_classes, k=k, temperature=temperature,
                       batch_size=batch_size)
  _, test_y = _check_xy("test", test_x, test_y, num_classes)
  return topk_accuracy(scores, test_y)


# ---------------------------------------------------------------------------- linear probe


@dataclasses.dataclass
class ProbeResult:
  """The chosen linear probe: logits = ((x - mean) / std) @ weights + bias."""
  weights: np.ndarray           # float32 [D, C]
  bias: np.ndarray              # float32 [C]
  mean: np.ndarray              # float32 [D], train-set mean
  std: np.ndarray               # float32 [D], sqrt(train-set var + 1e-6)
  lr: float                     # the chosen setting
  weight_decay: float
  val_top1: float               # of the chosen setting, fractions
  val_top5: float
  table: list[dict[str, Any]]   # per setting: lr, weight_decay, val_top1, val_top5, val_loss,
                                # train_loss (mean over the last epoch), diverged
  epochs: int
  batch_size: int
  seed: int


def _lr_at(step, peak, warmup_steps: int, total_steps: int):
  """Linear warmup over `warmup_steps` (from peak/warmup to peak), then cosine to 0."""
  step = step.astype(jnp.float32)
  warm = peak * (step + 1.0) / max(warmup_steps, 1)
  progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
  cos = peak * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(progress, 0.0, 1.0)))
  return jnp.where(step < warmup_steps, warm, cos)


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size", "warmup_steps"))
def _train_sweep(x, y, lrs, wds, params0, key, *, epochs: int, batch_size: int,
                 warmup_steps: int):
  """Trains every (lrs[s], wds[s]) from params0; returns (params [S, ...], last-epoch loss [S])."""
  n = x.shape[0]
  steps = n // batch_size
  total = epochs * steps

  def make_opt(lr, wd):
    return optax.chain(
        optax.add_decayed_weights(wd, mask={"w": True, "b": False}),
        optax.sgd(lambda t: _lr_at(t, lr, warmup_steps, total), momentum=0.9))

  def loss_fn(p, xb, yb):
    logits = xb @ p["w"] + p["b"]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

  def one_step(p, opt_state, lr, wd, xb, yb):
    loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
    updates, opt_state = make_opt(lr, wd).update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  step_all = jax.vmap(one_step, in_axes=(0, 0, 0, 0, None, None))
  num_settings = lrs.shape[0]
  params = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_settings,) + a.shape), params0)
  opt_state = jax.vmap(lambda lr, wd, p: make_opt(lr, wd).init(p))(lrs, wds, params)

  def epoch(carry, epoch_key):
    idx = jax.random.permutation(epoch_key, n)[:steps * batch_size].reshape(steps, batch_size)

    def batch(c, ib):
      p, s = c
      p, s, loss = step_all(p, s, lrs, wds, x[ib], y[ib])
      return (p, s), loss

    carry, losses = jax.lax.scan(batch, carry, idx)
    return carry, jnp.mean(losses, axis=0)

  (params, _), epoch_losses = jax.lax.scan(epoch, (params, opt_state),
                                           jax.random.split(key, epochs))
  return params, epoch_losses[-1]


def _log_softmax_np(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def linear_probe(train_x, train_y, val_x, val_y, num_classes: int, *,
                 lrs: Sequence[float] = (0.01, 0.1, 1.0),
                 weight_decays: Sequence[float] = (0.0, 1e-3),
                 epochs: int = 50, batch_size: int = 256, seed: int = 0) -> ProbeResult:
  """Sweeps (lr, wd) over `lrs x weight_decays`, selects by validation top-1 (module docstring).

  `lrs` are peak learning rates of SGD (momentum 0.9) at this batch size; `weight_decays` are L2
  coefficients on the weights. Val features must not come from the test split. Raises
  FloatingPointError if every setting diverged.
  """
  if epochs < 1 or batch_size < 1 or not lrs or not weight_decays:
    raise ValueError("need epochs >= 1, batch_size >= 1 and at least one lr and weight decay")
  train_x, train_y = _check_xy("train", train_x, train_y, num_classes)
  dim = train_x.shape[1]
  val_x, val_y = _check_xy("val", val_x, val_y, num_classes, dim=dim)
  mean = train_x.mean(axis=0, dtype=np.float64)
  std = np.sqrt(train_x.var(axis=0, dtype=np.float64) + BN_EPS)
  mean, std = mean.astype(np.float32), std.astype(np.float32)
  xs = (train_x - mean) / std
  vs = (val_x - mean) / std

  bs = min(batch_size, len(xs))
  steps = len(xs) // bs
  settings = [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]
  key_init, key_data = jax.random.split(jax.random.key(seed))
  params0 = {
      "w": 0.01 * jax.random.truncated_normal(key_init, -2.0, 2.0, (dim, num_classes)),
      "b": jnp.zeros((num_classes,), jnp.float32),
  }
  params, train_loss = _train_sweep(
      jnp.asarray(xs), jnp.asarray(train_y),
      jnp.asarray([s[0] for s in settings], jnp.float32),
      jnp.asarray([s[1] for s in settings], jnp.float32),
      params0, key_data, epochs=epochs, batch_size=bs,
      warmup_steps=int(round(0.1 * epochs * steps)))
  weights, biases = np.asarray(params["w"]), np.asarray(params["b"])
  train_loss = np.asarray(train_loss)

  table = []
  for i, (lr, wd) in enumerate(settings):
    diverged = not (np.all(np.isfinite(weights[i])) and np.all(np.isfinite(biases[i])) and
                    np.isfinite(train_loss[i]))
    row = {"lr": lr, "weight_decay": wd, "val_top1": 0.0, "val_top5": 0.0,
           "val_loss": math.nan, "train_loss": float(train_loss[i]), "diverged": diverged}
    if not diverged:
      logits = vs @ weights[i] + biases[i]
      row.update({f"val_{k}": v for k, v in topk_accuracy(logits, val_y).items()})
      row["val_loss"] = float(-np.mean(_log_softmax_np(logits)[np.arange(len(val_y)), val_y]))
    table.append(row)
  candidates = [i for i, row in enumerate(table) if not row["diverged"]]
  if not candidates:
    raise FloatingPointError(f"linear_probe: every setting diverged: {table}")
  best = max(candidates, key=lambda i: (table[i]["val_top1"], -table[i]["val_loss"], -i))
  return ProbeResult(
      weights=weights[best].astype(np.float32), bias=biases[best].astype(np.float32),
      mean=mean, std=std, lr=settings[best][0], weight_decay=settings[best][1],
      val_top1=table[best]["val_top1"], val_top5=table[best]["val_top5"], table=table,
      epochs=epochs, batch_size=bs, seed=seed)


def probe_predict(result: ProbeResult, x) -> np.ndarray:
  """Logits [N, C] of the probe on raw (unstandardised) features x [N, D]."""
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2 or x.shape[1] != result.weights.shape[0]:
    raise ValueError(f"features [N, {result.weights.shape[0]}] expected, got {x.shape}")
  return ((x - result.mean) / result.std) @ result.weights + result.bias
