"""Evaluation of a classifier: single-view validation and VideoMAE's multi-view test.

`predict` streams every video of a split once (`input_pipeline/eval_pipeline.py`), as all of its
views, through one jitted, sharded forward pass, and gathers the per-view outputs of all
processes (each video counted once, padding dropped). `metrics` merges them as VideoMAE does:
softmax per view, averaged per video, then top-1 / top-5 and per-class accuracy.

Videos that fail to decode are listed with their error and counted twice over: `top1` / `top5`
are over the videos that decoded, `top1_all` / `top5_all` count the failed ones as wrong.

`write_report(out_dir, ...)` writes `metrics.json` and `predictions.jsonl` (one line per video:
id, label, top-5 classes with scores, the error if any) atomically.

Cross-data-set evaluation (MGM Table 3's protocol: train on a source data set, test on a
target one): `read_class_map` reads a class-mapping file, one `source_class target_class` pair
per line (class names, or 0-based indices; fields separated by a tab, or by spaces when neither
holds one; `#` starts a comment). Several source classes may map to one target class; a source
class may not map to two. `metrics(..., class_map=...)` then scores each target video among the
MAPPED source classes only (the others are ignored), a prediction being right when its source
class maps to the video's class; target videos of classes nothing maps to are left out and
counted (`unmapped`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

from flax import nnx
import jax
from jax.experimental import multihost_utils
import numpy as np

from input_pipeline import eval_pipeline
from input_pipeline import views as views_lib
from mgm_jax import model as model_lib
from mgm_jax import sharding as sharding_lib


@dataclasses.dataclass
class Predictions:
  """Per-video results of one pass over a split, in split order (all processes gathered)."""
  index: np.ndarray  # int [N]
  label: np.ndarray  # int [N]
  names: list[str]
  errors: list[str]  # "" where the video decoded
  outputs: np.ndarray  # float32 [N, V, K]: per-view logits (or features)


def eval_spec(config, temporal_views: int = 1,
              spatial_views: int = 1) -> eval_pipeline.EvalSpec:
  """The evaluation views of a run's config (one view each: single-view validation)."""
  return eval_pipeline.EvalSpec(
      num_frames=config.model.num_frames, stride=config.data.stride,
      sampling=config.data.sampling, size=config.model.img_size,
      temporal_views=temporal_views, spatial_views=spatial_views)


def make_forward(model, mesh, features: bool = False) -> Callable:
  """jitted fn(params, frames uint8 [B, V, T, S, S, 3]) -> float32 [B, V, K], replicated.

  K = the classes' logits, or with `features` the pooled encoder features
  (`model.pooled_features`, either model).
  """
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  def forward(params, frames):
    b, v = frames.shape[:2]
    net = nnx.merge(graphdef, params, rest)
    x, _ = model_lib.normalize(frames.reshape(b * v, *frames.shape[2:]),
                               net.config.compute_dtype)
    out = model_lib.pooled_features(net, x) if features else net(x, deterministic=True)
    return out.reshape(b, v, -1).astype(np.float32)

  return jax.jit(forward, in_shardings=(None, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def _gather(x: np.ndarray) -> np.ndarray:
  """[...] from every process -> [process_count, ...] (process order)."""
  if jax.process_count() == 1:
    return np.asarray(x)[None]
  return np.asarray(multihost_utils.process_allgather(x, tiled=False))


def predict(forward: Callable, params, source, spec: eval_pipeline.EvalSpec, mesh, *,
            batch_size: int, num_videos: int = 0, num_threads: int = 4,
            progress: Callable[[int, int], None] | None = None) -> Predictions:
  """One pass over `source` (all processes together); returns every video's per-view outputs.

  `batch_size` counts videos per global step; `progress(step, steps)` is called after each.
  """
  nproc, pid = jax.process_count(), jax.process_index()
  dataset, steps = eval_pipeline.make_eval_dataset(
      source, spec, batch_size=batch_size, num_videos=num_videos, process_index=pid,
      process_count=nproc, num_threads=num_threads)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  # Parameters committed elsewhere (inference.load: one local device) are replicated onto the
  # mesh from host memory (a device-to-device copy across hosts is not possible).
  devices = set(mesh.devices.flat)
  params = jax.tree.map(
      lambda a: a if isinstance(a, jax.Array) and a.sharding.device_set == devices
      else jax.device_put(np.asarray(a), sharding_lib.replicated(mesh)), params)
  rows = {"index": [], "label": [], "name": [], "error": [], "outputs": []}
  for step, batch in zip(range(steps), dataset):
    frames = jax.make_array_from_process_local_data(batch_sharding, batch["frames"])
    outputs = np.asarray(jax.device_get(forward(params, frames)))
    # This process's rows in the global batch start at its first shard's offset.
    offset = min(s.index[0].start or 0 for s in frames.addressable_shards)
    meta = {k: _gather(np.asarray(batch[k])) for k in ("index", "label", "name", "error")}
    offsets = _gather(np.asarray(offset))
    order = np.argsort(offsets)  # processes in global row order
    for k, v in meta.items():
      rows[k].append(np.concatenate([v[p] for p in order]))
    rows["outputs"].append(outputs)
    if progress is not None:
      progress(step + 1, steps)
  index = np.concatenate(rows["index"])
  keep = index >= 0
  order = np.argsort(index[keep], kind="stable")
  pick = lambda a: np.concatenate(a)[keep][order]
  return Predictions(index=index[keep][order], label=pick(rows["label"]).astype(np.int64),
                     names=[eval_pipeline.decode_text(n) for n in pick(rows["name"])],
                     errors=[eval_pipeline.decode_text(e) for e in pick(rows["error"])],
                     outputs=pick(rows["outputs"]))


def _topk_hits(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  k = min(k, probs.shape[1])
  top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
  return (top == labels[:, None]).any(axis=1)


class ClassMapError(ValueError):
  """A malformed class-mapping file; the message names the file and the line."""


def _class_index(token: str, names: list[str] | None, path: str, line: int, what: str) -> int:
  if names is not None and token in names:
    return names.index(token)
  if token.isdigit() and (names is None or int(token) < len(names)):
    return int(token)
  raise ClassMapError(f"{path}:{line}: unknown {what} class {token!r}"
                      + (f" (the {what} has {len(names)} classes)" if names else ""))


def read_class_map(path: str, num_source_classes: int, source_names: list[str] | None = None,
                   target_names: list[str] | None = None) -> np.ndarray:
  """The mapping file -> int64 [num_source_classes]: each source class's target class or -1."""
  mapping = np.full((num_source_classes,), -1, np.int64)
  with open(path, encoding="utf-8") as f:
    for number, raw in enumerate(f, start=1):
      line = raw.split("#", 1)[0].strip()
      if not line:
        continue
      fields = [x.strip() for x in line.split("\t")] if "\t" in line else line.split()
      if len(fields) != 2:
        raise ClassMapError(f"{path}:{number}: expected 'source_class target_class', got "
                            f"{raw.strip()!r}")
      src = _class_index(fields[0], source_names, path, number, "source")
      dst = _class_index(fields[1], target_names, path, number, "target")
      if src >= num_source_classes:
        raise ClassMapError(f"{path}:{number}: source class {src} >= {num_source_classes}")
      if mapping[src] not in (-1, dst):
        raise ClassMapError(f"{path}:{number}: source class {fields[0]!r} is mapped twice")
      mapping[src] = dst
  if (mapping < 0).all():
    raise ClassMapError(f"{path}: maps no classes")
  return mapping


def _mapped(probs: np.ndarray, class_map: np.ndarray):
  """Source-class scores -> (scores over the mapped source classes, their target classes)."""
  keep = np.flatnonzero(class_map >= 0)
  return probs[:, keep], class_map[keep]


def metrics(preds: Predictions, class_names: list[str] | None = None,
            class_map: np.ndarray | None = None) -> dict[str, Any]:
  """VideoMAE's merge (mean of per-view softmax) -> accuracies, per class and overall.

  `class_map` (`read_class_map`): score on another data set's classes (module docstring);
  `class_names` are then the target's.
  """
  probs = views_lib.merge_scores(preds.outputs)
  ok = np.array([not e for e in preds.errors], bool)
  unmapped = 0
  if class_map is None:
    top1, top5 = _topk_hits(probs, preds.label, 1), _topk_hits(probs, preds.label, 5)
  else:
    scores, targets = _mapped(probs, class_map)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = targets[order]  # target class of each mapped source class, best first
    top1 = ranked[:, 0] == preds.label
    top5 = (ranked[:, :5] == preds.label[:, None]).any(axis=1)
    covered = np.isin(preds.label, targets)
    unmapped = int((~covered).sum())
    keep = covered
    preds = dataclasses.replace(
        preds, index=preds.index[keep], label=preds.label[keep],
        names=[n for n, k in zip(preds.names, keep) if k],
        errors=[e for e, k in zip(preds.errors, keep) if k], outputs=preds.outputs[keep])
    ok, top1, top5 = ok[keep], top1[keep], top5[keep]
  top1[~ok] = top5[~ok] = False
  n, n_ok = len(ok), int(ok.sum())
  per_class = {}
  for c in np.unique(preds.label[ok]):
    hits = top1[ok & (preds.label == c)]
    name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
    per_class[name] = {"top1": float(hits.mean()), "videos": int(hits.size)}
  return {
      "videos": n, "decoded": n_ok, "failed": n - n_ok,
      "top1": float(top1[ok].mean()) if n_ok else float("nan"),
      "top5": float(top5[ok].mean()) if n_ok else float("nan"),
      "top1_all": float(top1.mean()) if n else float("nan"),
      "top5_all": float(top5.mean()) if n else float("nan"),
      "mean_class_top1": (float(np.mean([v["top1"] for v in per_class.values()]))
                          if per_class else float("nan")),
      "views": int(preds.outputs.shape[1]) if n else 0,
      **({"unmapped": unmapped} if class_map is not None else {}),
      "per_class": per_class,
      "failed_videos": {name: err for name, err in zip(preds.names, preds.errors) if err},
  }


def _write_atomic(path: str, text: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_report(out_dir: str, preds: Predictions, results: dict[str, Any],
                 class_names: list[str] | None = None, extra: dict[str, Any] | None = None) -> None:
  """metrics.json (results + `extra`, e.g. step and views) and predictions.jsonl in out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  probs = views_lib.merge_scores(preds.outputs) if len(preds.index) else np.zeros((0, 0))
  lines = []
  for i in range(len(preds.index)):
    top = np.argsort(-probs[i], kind="stable")[:5]
    entry = {"video": preds.names[i], "label": int(preds.label[i])}
    if preds.errors[i]:
      entry["error"] = preds.errors[i]
    else:
      entry["top5"] = [[int(c), round(float(probs[i, c]), 6)] for c in top]
      if class_names is not None:
        entry["top5_names"] = [class_names[c] for c in top if c < len(class_names)]
    lines.append(json.dumps(entry))
  _write_atomic(os.path.join(out_dir, "predictions.jsonl"), "".join(l + "\n" for l in lines))
  _write_atomic(os.path.join(out_dir, "metrics.json"),
                json.dumps({**(extra or {}), **results}, indent=2) + "\n")
