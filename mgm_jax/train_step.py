"""One jitted, sharded training step: loss, gradients (with accumulation), AdamW update.

The same step trains both models; the model decides the loss:
- `MaskedAutoencoder` (pretraining): batch {"frames", "mask"} (+ what the targets read), the
  masked reconstruction loss: the weighted sum of its targets' terms (`targets.py`);
- `VideoClassifier` (finetuning, `classify=ClassifyLoss(...)`): batch {"frames", "label"},
  mixup / cutmix on device (`mixup.py`) and soft-target cross-entropy with label smoothing.

The train state is `optim.init_state`'s plain pytree {"step", "params", "opt_state"[, "ema"]},
so it checkpoints and reshards like any array tree. With `ema_decay` > 0 the state carries an
exponential moving average of the parameters, updated after every step.

Gradient accumulation runs inside the step: a global batch of B clips is cut into k micro-batches
of B / k (micro-batch j takes rows j, j + k, j + 2k, ... so each device works on every
micro-batch), their gradients are averaged, and the optimizer updates once. Every clip masks the
same number of tokens, so this equals the gradient of the whole batch at once; a term with
per-clip weights (the trajectory term leaves out clips without motion vectors) is averaged per
micro-batch, which differs from the whole batch's weighted mean when micro-batches hold
different numbers of scored clips.

Randomness (drop path, dropout, mixup) is a pure function of (seed, step, micro-batch): no RNG
state to save. Mixup pairs each clip with the micro-batch reversed, so with accumulation the
pairs come from within each micro-batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mgm_jax import loss as loss_lib
from mgm_jax import mixup
from mgm_jax import model as model_lib
from mgm_jax import optim
from mgm_jax import sharding as sharding_lib
from mgm_jax import targets as targets_lib


@dataclasses.dataclass(frozen=True)
class ClassifyLoss:
  """The finetuning objective: soft-target cross-entropy after mixup / cutmix."""
  num_classes: int
  label_smoothing: float = 0.1
  mixup_alpha: float = 0.8
  cutmix_alpha: float = 1.0
  mix_prob: float = 1.0
  switch_prob: float = 0.5


def state_shardings(abstract_state, mesh):
  """FSDP layout for params, optimizer state (and EMA); the step counter replicated."""
  return {k: (sharding_lib.replicated(mesh) if k == "step"
              else sharding_lib.tree_shardings(v, mesh)) for k, v in abstract_state.items()}


def all_finite(tree) -> jax.Array:
  """bool []: no NaN or inf in any floating-point leaf of `tree`."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.bool_(True)


def _stochastic(model, key) -> bool:
  """Reseeds drop path / dropout from `key`; returns whether the model is stochastic."""
  cfg = model.config
  stochastic = cfg.drop_path_rate > 0 or (cfg.num_classes > 0 and cfg.head_dropout > 0)
  if stochastic:
    # Models built with nnx.Rngs(seed) draw dropout from the "default" stream, models built
    # with a "dropout" stream from that one: reseed both (a missing name is ignored).
    nnx.reseed(model, default=key, dropout=key)
  return stochastic


def make_loss_fn(graphdef, rest, num_masked: int, targets, seed: int,
                 classify: ClassifyLoss | None = None) -> Callable:
  """loss(params, batch, step, micro) -> (total, {term: value}) for one micro-batch,
  randomness seeded per step."""
  def pretrain_loss(params, batch, step, micro):
    # copy=True: fresh Variables in this trace, so reseeding drop path may update them.
    model = nnx.merge(graphdef, params, rest, copy=True)
    mask = batch["mask"]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), micro)
    stochastic = _stochastic(model, key)
    x, video01 = model_lib.normalize(batch["frames"])
    preds = model.predict(x, mask, num_masked=num_masked, deterministic=not stochastic)
    return loss_lib.masked_losses(preds, {**batch, "video01": video01}, mask, num_masked,
                                  targets)

  def classify_loss(params, batch, step, micro):
    # copy=True: fresh Variables in this trace, so reseeding drop path may update them.
    model = nnx.merge(graphdef, params, rest, copy=True)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), micro)
    model_key, mix_key = jax.random.split(key)
    stochastic = _stochastic(model, model_key)
    x, _ = model_lib.normalize(batch["frames"], model.config.compute_dtype)
    c = classify
    x, targets, _ = mixup.mix(x, batch["label"], mix_key, num_classes=c.num_classes,
                              mixup_alpha=c.mixup_alpha, cutmix_alpha=c.cutmix_alpha,
                              switch_prob=c.switch_prob, prob=c.mix_prob,
                              label_smoothing=c.label_smoothing)
    return mixup.soft_cross_entropy(model(x, deterministic=not stochastic), targets), {}

  return pretrain_loss if classify is None else classify_loss


def batch_keys(model, targets=()) -> tuple[str, ...]:
  """The batch entries the step reads: frames, and the mask (autoencoder) or label, and what
  the targets read (`targets.batch_keys`)."""
  if isinstance(model, model_lib.VideoClassifier):
    return ("frames", "label")
  return ("frames", "mask", *targets_lib.batch_keys(targets))


def make_train_step(model: nnx.Module, optimizer: optax.GradientTransformation, schedule,
                    *, num_masked: int = 0, accum_steps: int = 1, norm_pix: bool = True,
                    targets=None, classify: ClassifyLoss | None = None,
                    ema_decay: float = 0.0, seed: int = 0, mesh=None,
                    shardings=None) -> Callable:
  """Returns step(state, batch) -> (state, metrics), jitted; the state's buffers are donated.

  batch: {"frames": uint8 [B, T, H, W, 3]} plus "mask" bool [B, t, h, w] (autoencoder, with
  `num_masked`) or "label" int32 [B] (classifier, with `classify`); B divisible by accum_steps.
  The autoencoder scores `targets` (`loss.Target`s; default: the pixels, normalised if
  `norm_pix`), each on the model head of its name; the batch then also holds what they read
  (`batch_keys`), and metrics["terms"] each term's value.
  With a mesh, pass `shardings` = state_shardings(...) and put the batch on
  sharding.batch_sharding(mesh). `ema_decay` > 0 needs a state from init_state(..., ema=True).
  """
  is_classifier = isinstance(model, model_lib.VideoClassifier)
  if is_classifier != (classify is not None):
    raise ValueError("a VideoClassifier trains with classify=ClassifyLoss(...), the "
                     "autoencoder without")
  if targets is None:
    cfg = model.config
    targets = [] if is_classifier else [
        loss_lib.PixelTarget(tubelet=cfg.tubelet, patch=cfg.patch, norm_pix=norm_pix)]
  targets = list(targets)
  keys = batch_keys(model, targets)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = make_loss_fn(graphdef, rest, num_masked, targets, seed, classify)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def micro_batches(x):
    b = x.shape[0]
    x = x.reshape(b // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1)
    if mesh is not None:
      spec = jax.sharding.PartitionSpec(None, sharding_lib.DATA_AXES)
      x = jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))
    return x

  def step(state, batch):
    params, batch = state["params"], {k: batch[k] for k in keys}
    if accum_steps == 1:
      (loss, terms), grads = grad_fn(params, batch, state["step"], 0)
    else:
      def body(carry, xs):
        micro, micro_batch = xs
        (loss, terms), grads = grad_fn(params, micro_batch, state["step"], micro)
        return jax.tree.map(jnp.add, carry, (loss, terms, grads)), None
      zeros = jax.tree.map(jnp.zeros_like, params)
      zero_terms = {t.name: jnp.zeros((), jnp.float32) for t in targets}
      (loss, terms, grads), _ = jax.lax.scan(
          body, (jnp.zeros((), jnp.float32), zero_terms, zeros),
          (jnp.arange(accum_steps), {k: micro_batches(v) for k, v in batch.items()}))
      loss, terms, grads = jax.tree.map(lambda g: g / accum_steps, (loss, terms, grads))
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_state = {"step": state["step"] + 1, "params": optax.apply_updates(params, updates),
                 "opt_state": opt_state}
    if ema_decay > 0:
      new_state["ema"] = optim.ema_update(state["ema"], new_state["params"], ema_decay)
    metrics = {"loss": loss, "terms": terms, "grad_norm": optax.tree.norm(grads),
               "lr": schedule(state["step"]),
               # Of the state this step returns (what a checkpoint would hold), not of its input.
               "state_finite": all_finite({k: v for k, v in new_state.items() if k != "step"})}
    return new_state, metrics

  if shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  batch_shard = sharding_lib.batch_sharding(mesh)
  return jax.jit(step, donate_argnums=(0,),
                 in_shardings=(shardings, {k: batch_shard for k in keys}),
                 out_shardings=(shardings, sharding_lib.replicated(mesh)))
