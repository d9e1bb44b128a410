"""The training loop: mesh -> data -> model -> shard -> step -> checkpoint -> eval -> loop.

`train(config, workdir)` runs on one CPU, a GPU box or every host of a TPU pod (one process per
host, each loading its share of every global batch). `setup` builds everything in that order
and restores the workdir's checkpoint; `loop` trains. One loop for both tasks: the config's
model decides (`model.num_classes` 0: pretrain the masked autoencoder; > 0: finetune the
classifier from `config.init`, validate every `eval.every_steps` keeping the best checkpoint in
<workdir>/best, and run the multi-view test at the end into <workdir>/eval). What a run promises:

- It refuses a workdir that another run holds or that belongs to another config, before
  writing anything (`workdir.py`).
- It resumes from the latest checkpoint (or `config.resume_step`), exactly: the data stream
  continues where the checkpoint was taken.
- No checkpoint ever holds a non-finite state: every step reports whether the state it returns
  is finite, and the loop checks all steps since the last check before any save.
- SIGTERM / preemption: save at the next step boundary, then exit; a second SIGTERM exits at once.
- Broken videos are skipped and counted against `data.max_skipped_fraction`; a data set where
  every video fails stops after `data.max_consecutive_failures`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from typing import Any, Callable

from absl import logging
from etils import epath
from flax import nnx
import grain
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from input_pipeline import datasets
from input_pipeline import eval_pipeline
from input_pipeline import pipeline
from input_pipeline import sources
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import masking
from mgm_jax import metrics as metrics_lib
from mgm_jax import model as model_lib
from mgm_jax import evaluate as evaluate_lib
from mgm_jax import optim
from mgm_jax import pretrained
from mgm_jax import probe
from mgm_jax import reconstruct
from mgm_jax import sharding as sharding_lib
from mgm_jax import targets as targets_lib
from mgm_jax import train_step as step_lib
from mgm_jax import validate
from mgm_jax import workdir as workdir_lib


class NonFiniteLossError(FloatingPointError):
  pass


class SkippedVideosError(RuntimeError):
  pass


def make_source(config, logdir: str, split: str | None = None):
  """config.data.source (one of `sources.KINDS`) -> a random-access source of video records.

  `split` (default data.split) picks another split of the same data: for a list source, the
  list file `<split>.txt` beside data.list_file; for synthetic data, a set generated with
  another seed under `<root>_<split>` (eval.num_videos videos, or as many as for training).
  """
  d = config.data
  split = split or d.split
  if d.source == "synthetic":
    root = d.root or os.path.join(logdir, "synthetic_videos")
    if split == d.split:
      return sources.synthetic_source(root, d.num_synthetic_videos, seed=config.seed,
                                      **dict(d.synthetic))
    held_out = config.eval.num_videos if "eval" in config else 0
    return sources.synthetic_source(f"{root}_{split}", held_out or d.num_synthetic_videos,
                                    seed=config.seed + 1 + sum(map(ord, split)),
                                    **dict(d.synthetic))
  if d.source == "prepared":
    return sources.PreparedSource(d.prepared_dir, split, d.dataset or None)
  if d.source == "raw":
    index = datasets.load(d.dataset, d.root, split, fold=d.fold)
    if index.missing:
      logging.warning("%s: %d listed videos are missing, e.g. %s", index.summary(),
                      len(index.missing), index.missing[:5])
    return datasets.IndexSource(index)
  list_file = d.list_file
  if split != d.split:
    list_file = os.path.join(os.path.dirname(d.list_file), f"{split}.txt")
  return sources.ListSource(list_file, d.root or None)


def clip_spec(config, train: bool = True) -> pipeline.ClipSpec:
  m, d = config.model, config.data
  terms = [] if m.num_classes > 0 else targets_lib.from_config(config)
  keys = targets_lib.batch_keys(terms)
  traj = next((t for t in terms if isinstance(t, targets_lib.TrajectoryTarget)), None)
  return pipeline.ClipSpec(
      between_frames="between" in keys, trajectory_points=traj.points if traj else 0,
      trajectory_steps=traj.steps if traj else 0,
      num_frames=m.num_frames, stride=d.stride, sampling=d.sampling, size=m.img_size,
      crop=d.crop, scales=tuple(d.scales), flip=d.flip, rand_augment_ops=d.rand_augment_ops,
      rand_augment_magnitude=d.rand_augment_magnitude, erase_prob=d.erase_prob, train=train,
      motion=d.motion, compensate_camera=d.compensate_camera, flow_preset=d.flow_preset,
      repeats=d.repeats,
      mask_strategy=None if m.num_classes > 0 else config.mask.strategy,
      mask_ratio=config.mask.ratio, mask_jitter=config.mask.jitter,
      mask_pool=config.mask.pool, mask_smooth=config.mask.smooth, tubelet=m.tubelet,
      patch=m.patch)


def class_names(source) -> list[str] | None:
  """The source's class names where it knows them (prepared shards, raw data sets)."""
  names = getattr(source, "class_names", None)
  if names is None and hasattr(source, "index"):
    names = source.index.class_names
  return list(names) if names is not None else None


@dataclasses.dataclass
class Run:
  """Everything `setup` built, in the order it built it."""
  config: Any
  mesh: jax.sharding.Mesh
  spec: pipeline.ClipSpec
  data_iter: grain.DatasetIterator
  total_steps: int
  model_cfg: model_lib.ModelConfig
  state: dict
  step: int
  train_step: Callable
  predict_first: Callable | None  # the autoencoder's reconstruction image
  to_global: Callable
  ckpt: checkpoint_lib.Checkpointer
  validate: Callable | None  # the classifier's single-view validation: params -> metrics
  forward: Callable | None  # the classifier's eval forward pass (multi-view test)
  knn: Callable | None = None  # the autoencoder's kNN monitor: params -> metrics
  batch_keys: tuple[str, ...] = ("frames", "mask")


def setup(config, workdir: str, logdir: str) -> Run:
  """Builds the run and restores its checkpoint, if any; writes nothing but checkpoint dirs."""
  nproc, pid = jax.process_count(), jax.process_index()

  # --- Mesh.
  mesh = sharding_lib.make_mesh(config.mesh.data, config.mesh.fsdp)
  logging.info("mesh %s over %d processes", dict(mesh.shape), nproc)

  # --- Data.
  source = make_source(config, logdir)
  spec = clip_spec(config)
  d = config.data
  dataset = pipeline.make_dataset(
      source, spec, batch_size=config.batch_size // nproc, seed=config.seed, process_index=pid,
      process_count=nproc, num_threads=d.num_threads, num_workers=d.num_workers,
      prefetch=d.prefetch, max_consecutive_failures=d.max_consecutive_failures)
  data_iter = iter(dataset)
  num_videos = d.num_train_videos or len(source)
  steps_per_epoch = max(num_videos // (config.batch_size // spec.repeats), 1)
  total_steps = (config.total_steps if config.total_steps > 0
                 else int(config.epochs * steps_per_epoch))
  logging.info("%s: %d videos, %d steps per epoch, %d steps", source, num_videos,
               steps_per_epoch, total_steps)

  # --- Model and optimizer.
  model_cfg = targets_lib.model_config(config)
  model = model_lib.make_model(model_cfg, nnx.Rngs(config.seed))
  is_classifier = model_cfg.num_classes > 0
  terms = [] if is_classifier else targets_lib.from_config(config)
  num_masked = (0 if is_classifier else
                masking.num_masked(config.mask.strategy, model_cfg.grid, config.mask.ratio))
  schedule = optim.make_schedule(config.optim, config.batch_size, steps_per_epoch, total_steps)
  optimizer = optim.for_model(config.optim, model_cfg, schedule, pretrained.nnx_params(model))
  ema = config.optim.ema_decay > 0

  # --- Shard.
  abstract = jax.eval_shape(lambda: optim.init_state(model, optimizer, ema))
  shardings = step_lib.state_shardings(abstract, mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)

  # --- Checkpoint (restore if there is one).
  ckpt = checkpoint_lib.Checkpointer(
      epath.Path(workdir) / "checkpoints", keep=config.keep_checkpoints,
      every_steps=config.checkpoint_every,
      resume_hint="set --config.resume_step={step} (or --config.restore_fallback=True)")
  resume = None if config.resume_step < 0 else config.resume_step
  if resume is not None or ckpt.latest_step() is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    step, state = ckpt.restore(target, data_iter, step=resume,
                               fallback=resume is None and config.restore_fallback)
    newer = [s for s in ckpt.all_steps() if s > step]
    if newer:  # resumed from an earlier step: the later ones would shadow the new saves
      logging.warning("resumed from step %d: setting aside later checkpoints %s", step,
                      ckpt.set_aside(newer))
    logging.info("resumed from step %d", step)
  else:
    step = 0
    if is_classifier:  # a fresh finetuning run starts from config.init's weights
      params = pretrained.initial_params(config, model_cfg, pretrained.nnx_params(model))
      weights = nnx.state(model, nnx.Param)
      nnx.replace_by_pure_dict(weights, jax.tree.map(jnp.asarray, params))
      nnx.update(model, weights)
    state = jax.device_put(optim.init_state(model, optimizer, ema), shardings)

  # --- Step.
  classify = None
  if is_classifier:
    classify = step_lib.ClassifyLoss(
        num_classes=model_cfg.num_classes, label_smoothing=config.loss.label_smoothing,
        mixup_alpha=config.mixup.mixup_alpha, cutmix_alpha=config.mixup.cutmix_alpha,
        mix_prob=config.mixup.prob, switch_prob=config.mixup.switch_prob)
  train_step = step_lib.make_train_step(
      model, optimizer, schedule, num_masked=num_masked, accum_steps=config.accum_steps,
      targets=terms, classify=classify, ema_decay=config.optim.ema_decay,
      seed=config.seed, mesh=mesh, shardings=shardings)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  def _predict_first(params, frames, mask):  # for the reconstruction image
    x, _ = model_lib.normalize(frames[:1])
    return nnx.merge(graphdef, params, rest)(x, mask[:1], num_masked=num_masked)[0]

  # --- Eval (classifier): single-view validation on eval.split.
  forward = validate_fn = None
  if is_classifier:
    forward = evaluate_lib.make_forward(model, mesh)
    val_source = make_source(config, logdir, config.eval.split)
    names = class_names(val_source)
    _check_some_decode(val_source, evaluate_lib.eval_spec(config), config.eval.split)

    def validate_fn(params):
      preds = evaluate_lib.predict(
          forward, params, val_source, evaluate_lib.eval_spec(config), mesh,
          batch_size=config.eval.batch_size, num_videos=config.eval.num_videos,
          num_threads=d.num_threads)
      return evaluate_lib.metrics(preds, names)

  # --- Eval (autoencoder): the kNN monitor on frozen features.
  knn = None
  if not is_classifier and config.eval.knn_every_steps:
    features = evaluate_lib.make_forward(model, mesh, features=True)
    query_source = make_source(config, logdir, config.eval.split)

    def knn(params):
      e, spec1 = config.eval, evaluate_lib.eval_spec(config)
      bank, query = (evaluate_lib.predict(features, params, src, spec1, mesh,
                                          batch_size=e.batch_size, num_videos=n,
                                          num_threads=d.num_threads)
                     for src, n in ((source, e.knn_train_videos), (query_source, e.num_videos)))
      ok_b = np.array([not x for x in bank.errors], bool)
      ok_q = np.array([not x for x in query.errors], bool)
      num_classes = int(max(bank.label.max(), query.label.max())) + 1
      return probe.knn_accuracy(bank.outputs[ok_b].mean(axis=1), bank.label[ok_b],
                                query.outputs[ok_q].mean(axis=1), query.label[ok_q],
                                num_classes)

  return Run(config=config, mesh=mesh, spec=spec, data_iter=data_iter, total_steps=total_steps,
             model_cfg=model_cfg, state=state, step=int(step), train_step=train_step,
             # The reconstruction image shows the pixel head: none without a pixel term.
             predict_first=None if all(t.name != "pixels" for t in terms) else jax.jit(
                 _predict_first, out_shardings=sharding_lib.replicated(mesh)),
             to_global=lambda local: jax.make_array_from_process_local_data(batch_sharding,
                                                                            local),
             ckpt=ckpt, validate=validate_fn, forward=forward, knn=knn,
             batch_keys=step_lib.batch_keys(model, terms))


def _check_some_decode(source, spec, split: str, tries: int = 3) -> None:
  """Stops at setup, not at the first validation hours later, if the first few videos of the
  split all fail to decode (a wrong path or an undecodable set)."""
  load = eval_pipeline.LoadViews(spec)
  picks = sorted({int(i) for i in np.linspace(0, len(source) - 1, min(tries, len(source)))})
  errors = [eval_pipeline.decode_text(load.map((i, source[i]))["error"]) for i in picks]
  if all(errors):
    raise SkippedVideosError(f"eval.split={split!r}: the {len(picks)} videos tried all failed to "
                             f"decode, e.g. {errors[0]}")


class _Preemption:
  """Turns the first SIGTERM into a flag checked between steps, in single-process runs.

  The second SIGTERM gets the default action (the process ends at once): a run that is stuck
  (e.g. in a save) can still be stopped. With several processes a signal reaches them at
  different steps, and a process saving alone would leave the others waiting: there, Orbax's
  `reached_preemption` (JAX's preemption sync service, one step for all processes) decides.
  """

  def __init__(self, single_process: bool):
    self.requested = False
    self._previous = None
    if single_process:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread (e.g. some test runners)
        pass

  def _handle(self, signum, frame):
    del frame
    logging.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting "
                    "(a second SIGTERM exits at once)")
    self.requested = True
    signal.signal(signum, signal.SIG_DFL)

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _Guards:
  """The checks made before every save and log line: all steps finite, broken videos in budget."""

  def __init__(self, config, ckpt: checkpoint_lib.Checkpointer):
    self._config, self._ckpt = config, ckpt
    self.pending = []  # (step, device metrics) since the last check: names a bad step exactly
    self.skipped = self.attempted = 0

  def check_finite(self) -> None:
    for step, m in jax.device_get(self.pending):
      loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
      if not (math.isfinite(loss) and math.isfinite(grad_norm) and bool(m["state_finite"])):
        what = ("the parameters or optimizer state after the update"
                if math.isfinite(loss) and math.isfinite(grad_norm) else "the loss")
        latest = self._ckpt.latest_step()
        kept = ("no checkpoint was written" if latest is None else
                f"the last checkpoint ({latest}) is intact")
        raise NonFiniteLossError(
            f"{what} became non-finite at step {step} (loss {loss:.4g}, grad norm "
            f"{grad_norm:.4g}, lr {float(m['lr']):.3g}): stopping without saving it; {kept}")
    self.pending.clear()

  def check_skipped(self) -> int:
    """Broken videos of all processes since this run started; stops over the error budget."""
    counts = np.array([self.skipped, self.attempted])
    if jax.process_count() > 1:
      counts = multihost_utils.process_allgather(counts).sum(axis=0)
    total_skipped, total = int(counts[0]), int(counts[1])
    budget = self._config.data.max_skipped_fraction
    if total_skipped > max(10, budget * total):
      raise SkippedVideosError(
          f"{total_skipped} of {total} videos were broken (data.max_skipped_fraction="
          f"{budget}); see the warnings for their names")
    return total_skipped


def loop(run: Run, logdir: str, *, stop_after: int | None = None) -> dict:
  """Trains from `run.step` to `run.total_steps`; returns the last logged metrics."""
  config, ckpt = run.config, run.ckpt
  pid = jax.process_index()
  first_step = step = run.step
  writer = metrics_lib.MetricsWriter(logdir, total_steps=run.total_steps,
                                     resume_step=first_step)
  preemption = _Preemption(single_process=jax.process_count() == 1)
  guards = _Guards(config, ckpt)
  best = _Best(run, writer) if run.validate is not None else None
  state, last = run.state, {}
  tic, clips_since = time.perf_counter(), 0
  try:
    while step < run.total_steps:
      batch = pipeline.flatten_repeats(next(run.data_iter))
      guards.skipped += int(batch["skipped"])
      guards.attempted += int(batch["skipped"]) + batch["frames"].shape[0] // run.spec.repeats
      inputs = {k: run.to_global(batch[k]) for k in run.batch_keys}
      state, metrics = run.train_step(state, inputs)
      step += 1
      clips_since += config.batch_size
      guards.pending.append((step, metrics))

      is_last = step == run.total_steps
      stopping = (preemption.requested or ckpt.reached_preemption(step)
                  or (stop_after is not None and step - first_step >= stop_after))
      will_save = is_last or stopping or step % config.checkpoint_every == 0
      if step % config.log_every == 0 or will_save:  # every process gets here at the same step
        guards.check_finite()  # before any save: a checkpoint never holds a non-finite state
        all_skipped = guards.check_skipped()
        elapsed = time.perf_counter() - tic
        host = jax.device_get(metrics)
        last = {k: float(v) for k, v in host.items() if k not in ("state_finite", "terms")}
        if len(host["terms"]) > 1:  # each term of a multi-target loss, unweighted
          last.update({f"loss_{k}": float(v) for k, v in host["terms"].items()})
        if "trajectory_valid" in batch:  # clips with codec vectors (the others are not scored)
          last["trajectory_clips"] = float(np.mean(batch["trajectory_valid"]))
        last.update(clips_per_s=clips_since / elapsed, skipped_videos=all_skipped)
        writer.write(step, last)
        writer.progress(step, {k: v for k, v in last.items() if k != "clips_per_s"},
                        last["clips_per_s"])
        tic, clips_since = time.perf_counter(), 0
      if (run.predict_first is not None and config.image_every
          and (step % config.image_every == 0 or is_last)):
        pred = jax.device_get(run.predict_first(state["params"], inputs["frames"],
                                                inputs["mask"]))
        if pid == 0:
          writer.write_image(step, "reconstruction", reconstruct.reconstruction_panel(
              batch["frames"][0], batch["mask"][0], pred, tubelet=run.model_cfg.tubelet,
              patch=run.model_cfg.patch, norm_pix=config.loss.norm_pix))
      ckpt.save(step, state, run.data_iter, force=is_last or stopping)
      # Evaluation after the save (a crash in it loses no steps), and not when stopping early:
      # a preempted run must exit within its grace period.
      evaluating = is_last or not stopping
      if run.validate is not None and evaluating and (
          is_last or (config.eval.every_steps and step % config.eval.every_steps == 0)):
        best.validate(step, state)
      if run.knn is not None and evaluating and (
          is_last or step % config.eval.knn_every_steps == 0):
        tic_knn = time.perf_counter()
        m = run.knn(state["params"])
        writer.write(step, {"knn_top1": m["top1"], "knn_top5": m["top5"],
                            "knn_seconds": time.perf_counter() - tic_knn})
        logging.info("step %d: kNN monitor top-1 %.4f, top-5 %.4f", step, m["top1"], m["top5"])
      if stopping and not is_last:
        logging.warning("stopping early: saved step %d, exiting", step)
        break
    ckpt.wait()  # a failed last save raises here, while the run can still say so
    run.state, run.step = state, step  # the input state was donated to the first step
  finally:
    preemption.close()
    writer.close()
    if best is not None:
      best.close()
  return last


def eval_params(state: dict):
  """What a classifier is evaluated with: the parameters' EMA if the run keeps one."""
  return state["ema"] if "ema" in state else state["params"]


class _Best:
  """Single-view validation results and the best checkpoint so far, in <workdir>/best.

  <workdir>/best/<step> holds the whole train state of the step with the highest validation
  top-1 (one kept) and best.json its metrics; a resumed run continues from best.json. A run
  resumed from an earlier step (config.resume_step) sets a later best aside with the later
  checkpoints: it belongs to the trajectory that is being replaced.

  A validation on which every video, or more than data.max_skipped_fraction of them (and more
  than 10), failed to decode stops the run: a wrong path for the validation split must not
  train for a week without a single valid number.
  """

  def __init__(self, run: Run, writer: metrics_lib.MetricsWriter):
    self._run, self._writer = run, writer
    self._dir = epath.Path(run.ckpt.directory).parent / "best"
    self._ckpt = checkpoint_lib.Checkpointer(self._dir, keep=1, every_steps=1,
                                             async_save=False)
    info = self._dir / "best.json"
    record = json.loads(info.read_text()) if info.exists() else None
    later = [s for s in self._ckpt.all_steps() if s > run.step]
    if later or (record is not None and record["step"] > run.step):
      logging.warning("resumed from step %d: setting aside the best checkpoint of a later step "
                      "%s", run.step, self._ckpt.set_aside(later))
      if jax.process_index() == 0 and info.exists():
        info.replace(self._dir / f"best.json.set-aside-{int(time.time())}")
      record = None
    self.top1 = record["top1"] if record is not None else -1.0

  def validate(self, step: int, state: dict) -> dict:
    tic = time.perf_counter()
    m = self._run.validate(eval_params(state))
    budget = self._run.config.data.max_skipped_fraction
    if m["decoded"] == 0 or m["failed"] > max(10, budget * m["videos"]):
      first = next(iter(m["failed_videos"].items()))
      raise SkippedVideosError(
          f"validation at step {step}: {m['failed']} of {m['videos']} videos of "
          f"eval.split={self._run.config.eval.split!r} failed to decode (data.max_skipped_"
          f"fraction={budget}), e.g. {first[0]}: {first[1]}")
    scalars = {"val_top1": m["top1"], "val_top5": m["top5"], "val_failed": m["failed"],
               "val_seconds": time.perf_counter() - tic}
    self._writer.write(step, scalars)
    logging.info("step %d: validation top-1 %.4f, top-5 %.4f over %d videos (%d failed)%s",
                 step, m["top1"], m["top5"], m["videos"], m["failed"],
                 "; new best" if m["top1"] > self.top1 else "")
    if m["top1"] > self.top1:
      self.top1 = m["top1"]
      if step in self._ckpt.all_steps():  # e.g. a resumed run validating the same step again
        self._ckpt.set_aside([step])
      self._ckpt.save(step, state, force=True)
      self._ckpt.wait()
      if jax.process_index() == 0:
        record = {"step": step, **{k: v for k, v in m.items() if k != "per_class"}}
        tmp = self._dir / f"best.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(self._dir / "best.json")
    return m

  def close(self):
    self._ckpt.close()


def test(run: Run, state: dict, logdir: str, out_dir: str) -> dict:
  """VideoMAE's multi-view test of `state` on eval.split; writes the report to `out_dir`."""
  config = run.config
  e = config.eval
  source = make_source(config, logdir, e.split)
  names = class_names(source)
  spec = evaluate_lib.eval_spec(config, e.temporal_views, e.spatial_views)
  tic = time.perf_counter()
  preds = evaluate_lib.predict(run.forward, eval_params(state), source, spec, run.mesh,
                               batch_size=e.batch_size, num_threads=config.data.num_threads)
  results = evaluate_lib.metrics(preds, names)
  seconds = time.perf_counter() - tic
  if jax.process_index() == 0:
    evaluate_lib.write_report(out_dir, preds, results, names, extra={
        "step": int(jax.device_get(state["step"])), "split": e.split,
        "temporal_views": e.temporal_views, "spatial_views": e.spatial_views,
        "seconds": seconds, "views_per_second": len(preds.index) * spec.num_views / seconds})
  logging.info("multi-view test (%dx%d views) on %s: top-1 %.4f, top-5 %.4f over %d videos "
               "(%d failed) -> %s", e.temporal_views, e.spatial_views, e.split, results["top1"],
               results["top5"], results["videos"], results["failed"], out_dir)
  return results


def train(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Pretrains as `config` says in `workdir`; returns the last logged metrics, plus
  "run_step" and "run_total_steps" (the step reached and the schedule's length: a run that
  stopped early, by SIGTERM / preemption / `stop_after`, has run_step < run_total_steps).

  `stop_after`: end this run (with a checkpoint) after that many steps, as a time-sliced job or
  an interruption would; the next call resumes from there.
  """
  validate.validate(config, jax.device_count(), jax.process_count())
  workdir, logdir = workdir_lib.run_dirs(workdir)
  is_main = jax.process_index() == 0
  with workdir_lib.lock(logdir) if is_main else contextlib.nullcontext():
    workdir_lib.check_resumable(workdir, config)
    run = setup(config, workdir, logdir)
    try:
      if is_main:  # only once the checkpoint (if any) restored: it belongs to this config
        workdir_lib.write_config(workdir, config)
      last = loop(run, logdir, stop_after=stop_after)
      out = os.path.join(logdir, "eval", f"{config.eval.split}-step{run.step}")
      if (run.forward is not None and config.eval.final_test and run.step == run.total_steps
          and not os.path.exists(os.path.join(out, "metrics.json"))):  # not again on relaunch
        results = test(run, run.state, logdir, out)
        last.update(test_top1=results["top1"], test_top5=results["top5"])
      last.update(run_step=run.step, run_total_steps=run.total_steps)
      return last
    finally:
      run.ckpt.close()
