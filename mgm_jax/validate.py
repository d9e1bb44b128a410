"""Checks a run's config before anything starts; every error names the config field.

The schema (`schema.defaults()`) defines the fields: an unknown field, or a value of another type,
is an error (with the closest field name). `model` also takes any `model.ModelConfig` field (a
custom architecture: encoder_dim, decoder_depth, ...). Choice lists come from the modules that own them
(mask strategies, motion policies, model sizes and dtypes, data sources and data sets), and every
number is checked against the range where it means something, so a bad value stops the run at
start with one line instead of failing (or doing damage) thousands of steps later.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect

from input_pipeline import datasets
from input_pipeline import decode
from input_pipeline import optical_flow
from input_pipeline import sources
from input_pipeline import synthetic
from mgm_jax import masking
from mgm_jax import model as model_lib
from mgm_jax import schema
from mgm_jax import sharding
from mgm_jax import targets as targets_lib


class ConfigError(ValueError):
  """An invalid config; the message starts with the field's dotted name."""


def _fail(field: str, message: str):
  raise ConfigError(f"config.{field}: {message}")


def _check_fields(config, spec, prefix: str = "") -> None:
  """Every field of `config` exists in `spec` with a value of the same kind, and vice versa."""
  missing = [k for k in spec if k not in config]
  if missing:
    _fail(prefix + missing[0], "missing; start the config from mgm_jax.schema.defaults()")
  for key, value in config.items():
    field = prefix + key
    if prefix == "model." and key not in spec and key in _ARCHITECTURE - _DERIVED:
      continue  # any ModelConfig field may override the preset; ModelConfig checks its value
    if key not in spec:
      close = difflib.get_close_matches(key, list(spec.keys()), n=1)
      _fail(field, "unknown field" + (f"; did you mean {prefix}{close[0]}?" if close else ""))
    expected = spec[key]
    if hasattr(expected, "items") and not field.endswith("data.synthetic"):
      if not hasattr(value, "items"):
        _fail(field, f"expected a section, got {value!r}")
      _check_fields(value, expected, field + ".")
    elif isinstance(expected, bool) or isinstance(value, bool):
      if not isinstance(value, bool) or not isinstance(expected, bool):
        _fail(field, f"{value!r} must be of type {type(expected).__name__}")
    elif isinstance(expected, float):
      if not isinstance(value, (int, float)):
        _fail(field, f"{value!r} must be a number")
    elif isinstance(expected, (tuple, list)):
      if not isinstance(value, (tuple, list)):
        _fail(field, f"{value!r} must be a list")
    elif not hasattr(expected, "items") and not isinstance(value, type(expected)):
      _fail(field, f"{value!r} must be of type {type(expected).__name__}")


_ARCHITECTURE = frozenset(f.name for f in dataclasses.fields(model_lib.ModelConfig))
_DERIVED = frozenset({"extra_heads", "motion_heads"})  # from config.loss (targets.model_config)


def _choice(field: str, value, choices) -> None:
  if value not in choices:
    _fail(field, f"{value!r} is unknown; choose one of {tuple(choices)}")


def _at_least(field: str, value, low) -> None:
  if value < low:
    _fail(field, f"{value} must be >= {low}")


def validate(config, num_devices: int, num_processes: int = 1) -> None:
  """Raises ConfigError for the first problem found."""
  _check_fields(config, schema.defaults())

  m = config.model
  _choice("model.size", m.size, model_lib.SIZES)
  _choice("model.dtype", m.dtype, model_lib.DTYPES)
  _choice("model.attention_impl", m.attention_impl, ("", "xla", "cudnn"))
  for name in ("num_frames", "img_size", "tubelet", "patch"):
    _at_least(f"model.{name}", m[name], 1)
  if m.img_size % m.patch:
    _fail("model.img_size", f"{m.img_size} is not divisible by model.patch={m.patch}")
  if m.img_size % 8:
    _fail("model.img_size", f"{m.img_size} must be a multiple of 8 (the motion grid)")
  if m.num_frames % m.tubelet:
    _fail("model.num_frames", f"{m.num_frames} is not divisible by model.tubelet={m.tubelet}")
  if not 0.0 <= m.drop_path_rate < 1.0:
    _fail("model.drop_path_rate", f"{m.drop_path_rate} must lie in [0, 1)")
  _at_least("model.regressor_depth", m.regressor_depth, 0)
  _choice("model.attention", m.attention, model_lib.ATTENTIONS)
  try:
    grid = model_lib.model_config_from(m).grid
  except ValueError as e:
    _fail("model", str(e))

  k = config.mask
  _choice("mask.strategy", k.strategy, masking.STRATEGIES)
  if not 0.0 < k.ratio < 1.0:
    _fail("mask.ratio", f"{k.ratio} must lie in (0, 1)")
  try:
    masking.num_masked(k.strategy, grid, k.ratio)
  except ValueError as e:
    _fail("mask.ratio", str(e))
  _at_least("mask.jitter", k.jitter, 0)
  _choice("mask.pool", k.pool, masking.POOLS)
  if not isinstance(k.smooth, int) or isinstance(k.smooth, bool) or k.smooth < 0:
    _fail("mask.smooth", f"{k.smooth!r} must be an integer >= 0 (slots)")

  d = config.data
  _choice("data.source", d.source, sources.KINDS)
  if d.source == "list" and not d.list_file:
    _fail("data.list_file", "is empty; point it at a VideoMAE list file ('path label' lines)")
  if d.source == "prepared" and not d.prepared_dir:
    _fail("data.prepared_dir", "is empty; point it at the --out of launch/prepare_data.py")
  _choice("data.dataset", d.dataset, datasets.DATASETS)
  if d.source == "raw" and not d.root:
    _fail("data.root", "is empty; source=raw reads the data set's own layout under it")
  if d.source == "synthetic":
    _at_least("data.num_synthetic_videos", d.num_synthetic_videos, 1)
  known = [p for p in inspect.signature(synthetic.make_video).parameters
           if p not in ("path", "seed")] + ["num_classes"]  # make_dataset's label classes
  for key in d.synthetic:
    _choice(f"data.synthetic.{key}", key, known)
  _choice("data.motion", d.motion, decode.MOTION_POLICIES)
  _choice("data.flow_preset", d.flow_preset, sorted(optical_flow.PRESETS))
  if d.motion == "flow":
    try:
      optical_flow.require_opencv()
    except ImportError as e:
      _fail("data.motion", str(e))
  for name, low in (("stride", 1), ("repeats", 1), ("fold", 1), ("num_train_videos", 0),
                    ("num_threads", 0), ("num_workers", 0), ("prefetch", 0),
                    ("max_consecutive_failures", 1)):
    _at_least(f"data.{name}", d[name], low)
  _choice("data.sampling", d.sampling, ("window", "segments"))
  _choice("data.crop", d.crop, ("multi_scale", "random_resized"))
  if not d.scales or not all(0.0 < s <= 1.0 for s in d.scales):
    _fail("data.scales", f"{tuple(d.scales)}: give one or more crop scales in (0, 1]")
  if not 0.0 <= d.max_skipped_fraction <= 1.0:
    _fail("data.max_skipped_fraction", f"{d.max_skipped_fraction} must lie in [0, 1]")

  try:
    sharding.mesh_shape(config.mesh.data, config.mesh.fsdp, num_devices)
  except ValueError as e:
    _fail("mesh", str(e))
  b, a = config.batch_size, config.accum_steps
  _at_least("batch_size", b, 1)
  _at_least("accum_steps", a, 1)
  if b % (num_devices * a):
    _fail("batch_size", f"{b} is not divisible by devices x accum_steps = {num_devices} x {a}")
  if (b // num_processes) % d.repeats:
    _fail("batch_size", f"the per-process batch {b // num_processes} is not divisible by "
          f"data.repeats={d.repeats}")
  if config.total_steps <= 0 and config.epochs <= 0:
    _fail("total_steps", "set total_steps > 0 or epochs > 0")
  _at_least("resume_step", config.resume_step, -1)

  o = config.optim
  if not o.base_lr > 0:
    _fail("optim.base_lr", f"{o.base_lr} must be > 0")
  for name in ("min_lr", "weight_decay", "grad_clip", "warmup_epochs"):
    _at_least(f"optim.{name}", o[name], 0)
  for name in ("b1", "b2"):
    if not 0.0 <= o[name] < 1.0:
      _fail(f"optim.{name}", f"{o[name]} must lie in [0, 1)")

  _at_least("optim.layer_decay", o.layer_decay, 0)
  if not 0.0 < o.layer_decay <= 1.0:
    _fail("optim.layer_decay", f"{o.layer_decay} must lie in (0, 1] (1 = off)")
  if not 0.0 <= o.ema_decay < 1.0:
    _fail("optim.ema_decay", f"{o.ema_decay} must lie in [0, 1) (0 = off)")

  _validate_finetuning(config, num_devices, num_processes)
  if m.num_classes == 0:
    _validate_targets(config)

  for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
    _at_least(name, config[name], 1)
  _at_least("image_every", config.image_every, 0)


def _validate_finetuning(config, num_devices: int, num_processes: int) -> None:
  """The fields that apply to the classifier (model.num_classes > 0)."""
  m, d, e = config.model, config.data, config.eval
  _at_least("model.num_classes", m.num_classes, 0)
  if not 0.0 <= m.head_dropout < 1.0:
    _fail("model.head_dropout", f"{m.head_dropout} must lie in [0, 1)")
  if not m.head_init_scale > 0:
    _fail("model.head_init_scale", f"{m.head_init_scale} must be > 0")
  _at_least("data.rand_augment_ops", d.rand_augment_ops, 0)
  if not 0 <= d.rand_augment_magnitude <= 10:
    _fail("data.rand_augment_magnitude", f"{d.rand_augment_magnitude} must lie in [0, 10]")
  if not 0.0 <= d.erase_prob <= 1.0:
    _fail("data.erase_prob", f"{d.erase_prob} must lie in [0, 1]")
  if not 0.0 <= config.loss.label_smoothing < 1.0:
    _fail("loss.label_smoothing", f"{config.loss.label_smoothing} must lie in [0, 1)")
  x = config.mixup
  for name in ("mixup_alpha", "cutmix_alpha"):
    _at_least(f"mixup.{name}", x[name], 0)
  for name in ("prob", "switch_prob"):
    if not 0.0 <= x[name] <= 1.0:
      _fail(f"mixup.{name}", f"{x[name]} must lie in [0, 1]")
  if config.init and m.num_classes == 0:
    _fail("init", "applies to finetuning only (set model.num_classes > 0)")
  _at_least("init_step", config.init_step, -1)
  for name in ("every_steps", "num_videos", "knn_every_steps", "knn_train_videos"):
    _at_least(f"eval.{name}", e[name], 0)
  for name in ("batch_size", "temporal_views", "spatial_views"):
    _at_least(f"eval.{name}", e[name], 1)
  if m.num_classes > 0 and e.knn_every_steps:
    _fail("eval.knn_every_steps", "is the pretraining monitor; a classifier validates with "
          "eval.every_steps")
  if (m.num_classes > 0 or e.knn_every_steps) and e.batch_size % num_devices:
    _fail("eval.batch_size", f"{e.batch_size} is not divisible by the {num_devices} devices")
  if (m.num_classes > 0 or e.knn_every_steps) and e.batch_size % num_processes:
    _fail("eval.batch_size", f"{e.batch_size} is not divisible by {num_processes} processes")


def _validate_targets(config) -> None:
  """The pretraining loss terms (mgm_jax/targets.py) and the data they need."""
  m, lc, d = config.model, config.loss, config.data
  for name in targets_lib.TERMS:
    _at_least(f"loss.{name}", lc[name], 0)
  if not any(lc[name] > 0 for name in targets_lib.TERMS):
    _fail("loss", f"every term weight is 0; set one of {targets_lib.TERMS} > 0")
  tubelet = model_lib.model_config_from(m).tubelet
  if lc.frame_diff > 0 and tubelet < 2:
    _fail("loss.frame_diff", f"differences frames inside a tubelet: model.tubelet={tubelet} "
          "must be >= 2")
  if (lc.frame_diff > 0 and lc.frame_diff_dense or lc.trajectory > 0) and (
      d.rand_augment_ops or d.erase_prob):
    _fail("loss", "the dense frame difference and the trajectories read frames and motion "
          "that RandAugment / random erasing do not change: set data.rand_augment_ops=0 and "
          "data.erase_prob=0")
  if lc.frame_diff > 0 and lc.frame_diff_dense and d.stride > 1 and d.sampling != "window":
    _fail("loss.frame_diff_dense", f"needs data.sampling='window' (equal gaps between sampled "
          f"frames), got {d.sampling!r}; or set it False")
  if lc.trajectory > 0:
    if d.motion == "frame_diff":
      _fail("loss.trajectory", "needs codec motion vectors; data.motion='frame_diff' has none")
    _at_least("loss.trajectory_points", lc.trajectory_points, 1)
    _at_least("loss.trajectory_steps", lc.trajectory_steps, 0)
    if lc.trajectory_patch_norm and lc.trajectory_points < 2:
      _fail("loss.trajectory_points", "trajectory_patch_norm normalises over a patch's "
            f"points: needs >= 2 points per side, got {lc.trajectory_points}")
    if m.patch % lc.trajectory_points:
      _fail("loss.trajectory_points", f"{lc.trajectory_points} must divide model.patch="
            f"{m.patch}")
    if not lc.trajectory_scale > 0:
      _fail("loss.trajectory_scale", f"{lc.trajectory_scale} must be > 0")
  cell = targets_lib.HogTarget.cell
  if lc.hog > 0 and m.patch % cell:
    _fail("loss.hog", f"HOG cells are {cell} px: model.patch={m.patch} must be a multiple of "
          f"{cell}")
  if m.motion_decoder and not any(lc[name] > 0 for name in targets_lib.MOTION_TERMS):
    _fail("model.motion_decoder", f"has nothing to predict: set one of "
          f"{targets_lib.MOTION_TERMS} > 0 in config.loss")
  try:
    targets_lib.model_config(config)  # the heads the terms need
  except ValueError as e:
    _fail("model", str(e))
