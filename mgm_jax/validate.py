"""Checks a pretraining config before anything starts; every error names the config field."""

from __future__ import annotations

from mgm_jax import masking
from mgm_jax import model as model_lib


class ConfigError(ValueError):
  """An invalid config; the message starts with the field's dotted name."""


def _img_size(model_config) -> tuple[int, int]:
  size = model_config.img_size
  return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)


def validate(config, num_devices: int, num_processes: int = 1) -> None:
  """Raises ConfigError for the first problem found."""
  def fail(field, message):
    raise ConfigError(f"config.{field}: {message}")

  m = config.model
  if m.size not in model_lib.SIZES:
    fail("model.size", f"{m.size!r} is unknown; choose one of {model_lib.SIZES}")
  for hw in _img_size(m):
    if hw % m.patch:
      fail("model.img_size", f"{m.img_size} is not divisible by model.patch={m.patch}")
    if hw % 8:
      fail("model.img_size", f"{m.img_size} must be a multiple of 8 (the motion grid)")
  h, w = _img_size(m)
  if h != w:
    fail("model.img_size", f"{m.img_size}: the input pipeline makes square clips (VideoMAE's "
         "crops); give one size")
  if m.num_frames % m.tubelet:
    fail("model.num_frames", f"{m.num_frames} is not divisible by model.tubelet={m.tubelet}")
  if m.dtype not in ("float32", "bfloat16"):
    fail("model.dtype", f"{m.dtype!r}; choose float32 or bfloat16")

  if config.mask.strategy not in masking.STRATEGIES:
    fail("mask.strategy", f"{config.mask.strategy!r} is unknown; choose one of "
         f"{masking.STRATEGIES}")
  if not 0.0 < config.mask.ratio < 1.0:
    fail("mask.ratio", f"{config.mask.ratio} must lie in (0, 1)")

  d = config.data
  if d.source not in ("list", "synthetic", "prepared", "raw"):
    fail("data.source", f"{d.source!r}; choose list, synthetic, prepared or raw")
  if d.source == "list" and not d.list_file:
    fail("data.list_file", "is empty; point it at a VideoMAE list file ('path label' lines)")
  if d.source == "prepared" and not d.get("prepared_dir"):
    fail("data.prepared_dir", "is empty; point it at the --out of launch/prepare_data.py")
  if d.source == "raw" and not (d.get("dataset") and d.root):
    fail("data.dataset", "raw needs data.dataset (ssv2, k400, ...) and data.root")
  if d.motion not in ("mv", "frame_diff", "auto"):
    fail("data.motion", f"{d.motion!r}; choose mv, frame_diff or auto")
  if d.stride < 1:
    fail("data.stride", f"{d.stride} must be >= 1")
  if d.repeats < 1:
    fail("data.repeats", f"{d.repeats} must be >= 1")

  b, k = config.batch_size, config.accum_steps
  if k < 1:
    fail("accum_steps", f"{k} must be >= 1")
  if b % (num_devices * k):
    fail("batch_size", f"{b} is not divisible by devices x accum_steps = {num_devices} x {k}")
  if (b // num_processes) % d.repeats:
    fail("batch_size", f"the per-process batch {b // num_processes} is not divisible by "
         f"data.repeats={d.repeats}")
  if config.total_steps <= 0 and config.epochs <= 0:
    fail("total_steps", "set total_steps > 0 or epochs > 0")
  if config.optim.base_lr <= 0:
    fail("optim.base_lr", f"{config.optim.base_lr} must be > 0")
