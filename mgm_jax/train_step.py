"""One jitted, sharded pretraining step: loss, gradients (with accumulation), AdamW update.

The train state is `optim.init_state`'s plain pytree {"step", "params", "opt_state"}, so it
checkpoints and reshards like any array tree.

Gradient accumulation runs inside the step: a global batch of B clips is cut into k micro-batches
of B / k (micro-batch j takes rows j, j + k, j + 2k, ... so each device works on every
micro-batch), their gradients are averaged, and the optimizer updates once. Every clip masks the
same number of tokens, so this equals the gradient of the whole batch at once.

Randomness (drop path) is a pure function of (seed, step, micro-batch): no RNG state to save.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mgm_jax import loss as loss_lib
from mgm_jax import model as model_lib
from mgm_jax import sharding as sharding_lib

def state_shardings(abstract_state, mesh):
  """FSDP layout for params and optimizer state; the step counter replicated."""
  return {"step": sharding_lib.replicated(mesh),
          "params": sharding_lib.tree_shardings(abstract_state["params"], mesh),
          "opt_state": sharding_lib.tree_shardings(abstract_state["opt_state"], mesh)}


def all_finite(tree) -> jax.Array:
  """bool []: no NaN or inf in any floating-point leaf of `tree`."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.bool_(True)


def make_loss_fn(graphdef, rest, num_masked: int, norm_pix: bool, seed: int) -> Callable:
  """loss(params, frames, mask, step, micro) for one micro-batch, drop path seeded per step."""
  def loss_fn(params, frames, mask, step, micro):
    model = nnx.merge(graphdef, params, rest)
    cfg = model.config
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), micro)
    if cfg.drop_path_rate > 0:
      nnx.reseed(model, dropout=key)
    x, video01 = model_lib.normalize(frames)
    pred = model(x, mask, num_masked=num_masked, deterministic=cfg.drop_path_rate == 0)
    # One term today; a further target (frame difference, trajectories) is one more head and
    # one more entry here.
    targets = [loss_lib.PixelTarget(tubelet=cfg.tubelet, patch=cfg.patch, norm_pix=norm_pix)]
    total, _ = loss_lib.masked_losses({"pixels": pred}, {"video01": video01}, mask, num_masked,
                                      targets)
    return total
  return loss_fn


def make_train_step(model: nnx.Module, optimizer: optax.GradientTransformation, schedule,
                    *, num_masked: int, accum_steps: int = 1, norm_pix: bool = True,
                    seed: int = 0, mesh=None, shardings=None) -> Callable:
  """Returns step(state, batch) -> (state, metrics), jitted; the state's buffers are donated.

  batch: {"frames": uint8 [B, T, H, W, 3], "mask": bool [B, t, h, w]}, B divisible by
  accum_steps. With a mesh, pass `shardings` = state_shardings(...) and put the batch on
  sharding.batch_sharding(mesh).
  """
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = make_loss_fn(graphdef, rest, num_masked, norm_pix, seed)
  grad_fn = jax.value_and_grad(loss_fn)

  def micro_batches(x):
    b = x.shape[0]
    x = x.reshape(b // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1)
    if mesh is not None:
      spec = jax.sharding.PartitionSpec(None, sharding_lib.DATA_AXES)
      x = jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))
    return x

  def step(state, batch):
    params, frames, mask = state["params"], batch["frames"], batch["mask"]
    if accum_steps == 1:
      loss, grads = grad_fn(params, frames, mask, state["step"], 0)
    else:
      def body(carry, xs):
        loss_sum, grad_sum = carry
        micro, f, m = xs
        loss, grads = grad_fn(params, f, m, state["step"], micro)
        return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None
      zeros = jax.tree.map(jnp.zeros_like, params)
      (loss, grads), _ = jax.lax.scan(
          body, (jnp.zeros((), jnp.float32), zeros),
          (jnp.arange(accum_steps), micro_batches(frames), micro_batches(mask)))
      loss, grads = loss / accum_steps, jax.tree.map(lambda g: g / accum_steps, grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_state = {"step": state["step"] + 1, "params": optax.apply_updates(params, updates),
                 "opt_state": opt_state}
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "lr": schedule(state["step"]),
               # Of the state this step returns (what a checkpoint would hold), not of its input.
               "state_finite": all_finite((new_state["params"], opt_state))}
    return new_state, metrics

  if shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  batch_shard = sharding_lib.batch_sharding(mesh)
  return jax.jit(step, donate_argnums=(0,),
                 in_shardings=(shardings, {"frames": batch_shard, "mask": batch_shard}),
                 out_shardings=(shardings, sharding_lib.replicated(mesh)))
