"""The pretraining optimizer: AdamW with VideoMAE's weight-decay exclusions and lr schedule.

Paper, Appendix A, Table 5: AdamW (0.9, 0.95), weight decay 0.05, lr = base_lr x global_batch / 256
(base 1.5e-4), linear warmup then cosine decay. As in VideoMAE, weight decay applies only to
weight matrices: biases, norm scales, q/v biases (all 1-D) and the mask token are not decayed.
"""

from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import optax

NO_DECAY_NAMES = ("mask_token",)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Step counts of the learning-rate schedule, derived from the config."""
  peak_lr: float
  min_lr: float
  warmup_steps: int
  total_steps: int

  def __call__(self, step):
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=self.peak_lr, warmup_steps=self.warmup_steps,
        decay_steps=max(self.total_steps, self.warmup_steps + 1), end_value=self.min_lr)(step)


def make_schedule(optim_config, global_batch: int, steps_per_epoch: int,
                  total_steps: int) -> Schedule:
  """Linear scaling (VideoMAE scales the peak and the final lr by global_batch / 256); warmup
  given in epochs (`warmup_epochs`) or steps (`warmup_steps`)."""
  scale = global_batch / 256
  warmup = optim_config.get("warmup_steps", -1)
  if warmup is None or warmup < 0:
    warmup = int(round(optim_config.warmup_epochs * steps_per_epoch))
  return Schedule(peak_lr=optim_config.base_lr * scale, min_lr=optim_config.min_lr * scale,
                  warmup_steps=min(warmup, total_steps),
                  total_steps=total_steps)


def decay_mask(params):
  """True for leaves that get weight decay: matrices/kernels, except the mask token."""
  def decays(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return leaf.ndim > 1 and not any(n in NO_DECAY_NAMES for n in names)
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_config, schedule: Schedule) -> optax.GradientTransformation:
  """AdamW with optional global-norm clipping (`grad_clip`, None or <= 0 to disable)."""
  parts = []
  if optim_config.get("grad_clip", None):
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip))
  parts.append(optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2,
                           eps=optim_config.get("eps", 1e-8),
                           weight_decay=optim_config.weight_decay, mask=decay_mask))
  return optax.chain(*parts)


def init_state(model, optimizer: optax.GradientTransformation) -> dict:
  """The train state {"step", "params", "opt_state"}: plain pytrees, checkpointed as they are.

  params is the model's `nnx.Param` state as nested dicts (`nnx.to_pure_dict`).
  """
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": optimizer.init(params)}
