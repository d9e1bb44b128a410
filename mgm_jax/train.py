"""The pretraining loop: mesh -> data -> model -> shard -> step -> checkpoint -> loop.

`train(config, workdir)` runs on one CPU, a GPU box or every host of a TPU pod (one process per
host, each loading its share of every global batch). It resumes from the workdir's latest
checkpoint, saves on SIGTERM / preemption and exits cleanly, and stops with the step named if the
loss stops being finite (the last checkpoint, written before that step, stays intact).
"""

from __future__ import annotations

import math
import os
import signal
import time

from etils import epath

import jax
from jax.experimental import multihost_utils
import numpy as np
from absl import logging
from flax import nnx

from input_pipeline import datasets
from input_pipeline import pipeline
from input_pipeline import sources
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import masking
from mgm_jax import metrics as metrics_lib
from mgm_jax import model as model_lib
from mgm_jax import optim
from mgm_jax import reconstruct
from mgm_jax import sharding as sharding_lib
from mgm_jax import train_step as step_lib
from mgm_jax import validate


class NonFiniteLossError(FloatingPointError):
  pass


class SkippedVideosError(RuntimeError):
  pass


def run_dirs(workdir: str) -> tuple[str, str]:
  """(workdir, logdir). Checkpoints and config.json go to `workdir`, which may be any path
  etils.epath and Orbax support (e.g. gs://...). Metrics, TensorBoard events, images and generated
  synthetic videos need a local file system: for a remote workdir they go to
  /tmp/mgm_logs/<workdir's last part> on process 0's host (copy them up yourself)."""
  if "://" not in workdir:
    workdir = os.path.abspath(workdir)
    return workdir, workdir
  logdir = os.path.join("/tmp/mgm_logs", workdir.rstrip("/").rsplit("/", 1)[-1])
  logging.warning("remote workdir %s: metrics, TensorBoard events and images go to %s",
                  workdir, logdir)
  return workdir, logdir


def make_source(config, workdir: str):
  """config.data.source: synthetic | list (VideoMAE list file) | prepared (ArrayRecord shards
  from launch/prepare_data.py) | raw (a data set's own annotations, decoded on the fly)."""
  d = config.data
  if d.source == "synthetic":
    root = d.root or os.path.join(workdir, "synthetic_videos")
    return sources.synthetic_source(root, d.num_synthetic_videos, seed=config.seed,
                                    **dict(d.get("synthetic", {})))
  if d.source == "prepared":
    return sources.PreparedSource(d.prepared_dir, d.get("split", "train"),
                                  d.get("dataset") or None)
  if d.source == "raw":
    index = datasets.load(d.dataset, d.root, d.get("split", "train"), fold=d.get("fold", 1))
    if index.missing:
      logging.warning("%s: %d listed videos are missing, e.g. %s", index.summary(),
                      len(index.missing), index.missing[:5])
    return datasets.IndexSource(index)
  return sources.ListSource(d.list_file, d.root or None)


def clip_spec(config, train: bool = True) -> pipeline.ClipSpec:
  m, d = config.model, config.data
  size = model_lib.model_config_from(m).img_size[0]  # square: validate.py checks it
  return pipeline.ClipSpec(
      num_frames=m.num_frames, stride=d.stride, size=size, scales=tuple(d.scales),
      flip=d.flip, train=train, motion=d.motion, compensate_camera=d.compensate_camera,
      repeats=d.repeats, mask_strategy=config.mask.strategy, mask_ratio=config.mask.ratio,
      mask_jitter=config.mask.jitter, tubelet=m.tubelet, patch=m.patch)


class _Preemption:
  """Turns SIGTERM into a flag checked between steps, in single-process runs.

  With several processes a signal reaches them at different steps, and a process saving alone
  would leave the others waiting: there, Orbax's `reached_preemption` (JAX's preemption sync
  service, which agrees on one step for all processes) decides instead.
  """

  def __init__(self, single_process: bool):
    self.requested = False
    if not single_process:
      return
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some test runners)
      pass

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting")
    self.requested = True


def train(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Pretrains as `config` says; returns the last logged metrics.

  `stop_after`: end this run (with a checkpoint) after that many steps, as a time-sliced job or
  an interruption would; the next call resumes from there.
  """
  nproc, pid = jax.process_count(), jax.process_index()
  validate.validate(config, jax.device_count(), nproc)
  workdir, logdir = run_dirs(workdir)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  if pid == 0:
    (epath.Path(workdir) / "config.json").write_text(config.to_json(indent=2))

  # --- Mesh.
  mesh = sharding_lib.make_mesh(config.mesh.data, config.mesh.fsdp)
  logging.info("mesh %s over %d processes", dict(mesh.shape), nproc)

  # --- Data.
  source = make_source(config, logdir)
  spec = clip_spec(config)
  local_batch = config.batch_size // nproc
  dataset = pipeline.make_dataset(
      source, spec, batch_size=local_batch, seed=config.seed, process_index=pid,
      process_count=nproc, num_threads=config.data.num_threads,
      num_workers=config.data.num_workers, prefetch=config.data.prefetch)
  data_iter = iter(dataset)
  num_videos = config.data.num_train_videos or len(source)
  steps_per_epoch = max(num_videos // (config.batch_size // spec.repeats), 1)
  total_steps = (config.total_steps if config.total_steps > 0
                 else config.epochs * steps_per_epoch)
  logging.info("%s: %d videos, %d steps per epoch, %d steps", source, num_videos,
               steps_per_epoch, total_steps)

  # --- Model and optimizer.
  model_cfg = model_lib.model_config_from(config.model)
  model = model_lib.MaskedAutoencoder(model_cfg, rngs=nnx.Rngs(config.seed))
  num_masked = masking.num_masked(config.mask.strategy, model_cfg.grid, config.mask.ratio)
  schedule = optim.make_schedule(config.optim, config.batch_size, steps_per_epoch, total_steps)
  optimizer = optim.make_optimizer(config.optim, schedule)

  # --- Shard.
  abstract = jax.eval_shape(lambda: optim.init_state(model, optimizer))
  shardings = step_lib.state_shardings(abstract, mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)

  # --- Checkpoint (restore if there is one).
  ckpt = checkpoint_lib.Checkpointer(str(epath.Path(workdir) / "checkpoints"),
                                     keep=config.keep_checkpoints,
                                     every_steps=config.checkpoint_every)
  if ckpt.latest_step() is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    step, state = ckpt.restore(target, data_iter)
    logging.info("resumed from step %d", step)
  else:
    step = 0
    state = jax.device_put(optim.init_state(model, optimizer), shardings)

  # --- Step.
  train_step = step_lib.make_train_step(
      model, optimizer, schedule, num_masked=num_masked, accum_steps=config.accum_steps,
      norm_pix=config.loss.norm_pix, seed=config.seed, mesh=mesh, shardings=shardings)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  def _predict_first(params, frames, mask):  # for the reconstruction image
    m = nnx.merge(graphdef, params, rest)
    x, _ = model_lib.normalize(frames[:1])
    return m(x, mask[:1], num_masked=num_masked)[0]
  predict_first = jax.jit(_predict_first, out_shardings=sharding_lib.replicated(mesh))

  def to_global(local):
    return jax.make_array_from_process_local_data(batch_sharding, local)

  # --- Loop.
  first_step = step
  writer = metrics_lib.MetricsWriter(logdir, total_steps=total_steps,
                                     resume_step=first_step if first_step else None)
  preemption = _Preemption(single_process=nproc == 1)
  pending = []  # (step, device metrics) since the last host check, to name a bad step exactly
  skipped = attempted = 0
  last = {}
  tic, clips_since = time.perf_counter(), 0

  def check_finite():
    for s, m in jax.device_get(pending):
      if not (math.isfinite(float(m["loss"])) and math.isfinite(float(m["grad_norm"]))):
        raise NonFiniteLossError(
            f"loss {float(m['loss'])} / grad norm {float(m['grad_norm'])} at step {s}: stopping; "
            f"the last checkpoint ({ckpt.latest_step()}) is intact")
    pending.clear()

  def check_skipped() -> int:
    """Broken videos of all processes since this run started; stops over the error budget."""
    counts = np.array([skipped, attempted])
    if nproc > 1:
      counts = multihost_utils.process_allgather(counts).sum(axis=0)
    total_skipped, total = int(counts[0]), int(counts[1])
    if total_skipped > max(10, config.data.max_skipped_fraction * total):
      raise SkippedVideosError(
          f"{total_skipped} of {total} videos were broken (data.max_skipped_fraction="
          f"{config.data.max_skipped_fraction}); see the warnings for their names")
    return total_skipped

  try:
    while step < total_steps:
      batch = pipeline.flatten_repeats(next(data_iter))
      skipped += int(batch["skipped"])
      attempted += int(batch["skipped"]) + batch["frames"].shape[0] // spec.repeats
      frames, mask = to_global(batch["frames"]), to_global(batch["mask"])
      state, metrics = train_step(state, {"frames": frames, "mask": mask})
      step += 1
      clips_since += config.batch_size
      pending.append((step, metrics))

      is_last = step == total_steps
      stopping = (preemption.requested or ckpt.reached_preemption(step)
                  or (stop_after is not None and step - first_step >= stop_after))
      will_save = is_last or stopping or step % config.checkpoint_every == 0
      if step % config.log_every == 0 or will_save:  # every process gets here at the same step
        check_finite()  # before any save: a checkpoint never holds a non-finite state
        all_skipped = check_skipped()
        elapsed = time.perf_counter() - tic
        last = {k: float(v) for k, v in jax.device_get(metrics).items()}
        last.update(clips_per_s=clips_since / elapsed, skipped_videos=all_skipped)
        writer.write(step, last)
        writer.progress(step, {k: v for k, v in last.items() if k != "clips_per_s"},
                        last["clips_per_s"])
        tic, clips_since = time.perf_counter(), 0
      if config.image_every and (step % config.image_every == 0 or is_last):
        pred = jax.device_get(predict_first(state["params"], frames, mask))
        if pid == 0:
          writer.write_image(step, "reconstruction", reconstruct.reconstruction_panel(
              batch["frames"][0], batch["mask"][0], pred, tubelet=model_cfg.tubelet,
              patch=model_cfg.patch, norm_pix=config.loss.norm_pix))
      ckpt.save(step, state, data_iter, force=is_last or stopping)
      if stopping and not is_last:
        logging.warning("stopping early: saved step %d, exiting", step)
        break
  finally:
    ckpt.close()
    writer.close()
  return last
