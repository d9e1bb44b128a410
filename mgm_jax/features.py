"""Frozen-encoder features of a run's videos, and the kNN / linear-probe evaluation on them.

Shared by launch/extract_features.py and the ablation runner (mgm_jax/ablation.py), so both
measure a representation the same way:

  * features: the encoder's tokens on the whole (unmasked) clip, mean-pooled
    (`model.pooled_features`: a pretraining run after the encoder's final norm, a classifier what
    its head reads), one vector per video averaged over its views; videos that fail to decode are
    left out and listed;
  * `probe_evaluation`: a weighted kNN (k=20, cosine, T=0.07) of the test videos against the
    train videos, and a linear probe swept over learning rates x weight decays whose setting is
    chosen on a held-out fraction of the TRAIN videos (never the test split), then retrained on
    all train videos and reported once on the test split (mgm_jax/probe.py has the details).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from flax import nnx
import jax
import numpy as np

from mgm_jax import evaluate
from mgm_jax import probe
from mgm_jax import sharding


def extract_split(loaded, config, source, out_path: str, *, temporal_views: int = 1,
                  spatial_views: int = 1, batch_size: int = 8, num_videos: int = 0,
                  meta: dict[str, Any] | None = None) -> tuple[str, int, int]:
  """Writes `out_path` (.npz, `probe.save_features`) for every video of `source`.

  Runs on all devices and processes; process 0 writes the file and, beside it,
  `<name>.failed.txt` (one "video<TAB>error" line per video that failed to decode).
  Returns (out_path, videos written, videos failed).
  """
  mesh = sharding.make_mesh(-1, 1)
  spec = evaluate.eval_spec(config, temporal_views, spatial_views)
  forward = evaluate.make_forward(loaded.model, mesh, features=True)
  params = nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param))
  batch = max(batch_size - batch_size % jax.device_count(), jax.device_count())
  preds = evaluate.predict(forward, params, source, spec, mesh, batch_size=batch,
                           num_videos=num_videos, num_threads=config.data.num_threads)
  ok = np.array([not e for e in preds.errors], bool)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    probe.save_features(out_path, preds.outputs[ok].mean(axis=1), preds.label[ok],
                        np.asarray(preds.names)[ok], meta={
                            "step": loaded.step, "temporal_views": temporal_views,
                            "spatial_views": spatial_views, "model": type(loaded.model).__name__,
                            "failed": int((~ok).sum()), **(meta or {})})
    failed = [f"{n}\t{e}\n" for n, e in zip(preds.names, preds.errors) if e]
    with open(os.path.splitext(out_path)[0] + ".failed.txt", "w", encoding="utf-8") as f:
      f.writelines(failed)
  return out_path, int(ok.sum()), int((~ok).sum())


def probe_evaluation(train_x, train_y, test_x, test_y, num_classes: int, *, k: int = 20,
                     val_fraction: float = 0.1, lrs: Sequence[float] = (0.01, 0.1, 1.0),
                     weight_decays: Sequence[float] = (0.0, 0.001), epochs: int = 50,
                     seed: int = 0) -> dict[str, Any]:
  """kNN and the linear probe (module docstring); returns a JSON-ready dict."""
  knn = probe.knn_accuracy(train_x, train_y, test_x, test_y, num_classes, k=k)
  order = np.random.default_rng(seed).permutation(len(train_y))
  held = max(1, int(round(val_fraction * len(order))))
  if held >= len(order):
    raise ValueError(f"val_fraction={val_fraction} leaves none of the {len(order)} train "
                     "videos to fit the probe on")
  val, fit = order[:held], order[held:]
  lrs, wds = [float(v) for v in lrs], [float(v) for v in weight_decays]
  sweep = probe.linear_probe(train_x[fit], train_y[fit], train_x[val], train_y[val],
                             num_classes, lrs=lrs, weight_decays=wds, epochs=epochs,
                             batch_size=min(256, len(fit)), seed=seed)
  final = probe.linear_probe(train_x, train_y, train_x[val], train_y[val], num_classes,
                             lrs=(sweep.lr,), weight_decays=(sweep.weight_decay,),
                             epochs=epochs, batch_size=min(256, len(train_y)), seed=seed)
  linear = probe.topk_accuracy(probe.probe_predict(final, test_x), test_y)
  return {"knn": knn, "linear": linear,
          "chosen": {"lr": sweep.lr, "weight_decay": sweep.weight_decay},
          "sweep": sweep.table, "k": k, "train_videos": int(len(train_y)),
          "test_videos": int(len(test_y)), "held_out_videos": int(held),
          "num_classes": num_classes, "seed": seed}
