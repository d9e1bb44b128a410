"""The optimizer: AdamW with VideoMAE's weight-decay exclusions and lr schedule; layer decay; EMA.

Paper, Appendix A, Table 5: AdamW (0.9, 0.95), weight decay 0.05, lr = base_lr x global_batch / 256
(base 1.5e-4), linear warmup then cosine decay. As in VideoMAE, weight decay applies only to
weight matrices: biases, norm scales, q/v biases (all 1-D) and the mask token are not decayed.

Finetuning (VideoMAE `run_class_finetuning.py` + `optim_factory.py`) excludes from weight decay
the params that are 1-D, named `*.bias`, or in the model's `no_weight_decay()` ({pos_embed,
cls_token} for the classifier; + mask_token for pretraining). For our classifier's leaves that
is exactly `decay_mask`: every bias and norm scale is 1-D, no kernel is named bias, and we have
no pos_embed / cls_token parameters.

Layer-wise lr decay (VideoMAE / BEiT): the block index l of a parameter (`layer_id`: patch
embedding 0, block i -> i + 1, everything after the blocks num_layers + 1) gives the scale
decay ** (num_layers + 1 - l). VideoMAE multiplies each group's lr by it, so the whole AdamW
step (the Adam direction and the decoupled weight-decay term lr * wd * p) is scaled:
`make_optimizer(..., lr_scales=layer_decay_scales(params, decay, num_layers))` does the same by
scaling each leaf's final update.
"""

from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import optax

NO_DECAY_NAMES = ("mask_token", "mask_query")  # mask_query: MAM2 regressor's
# VideoMAE's get_num_layer_for_vit: these go with the patch embedding (layer 0).
LAYER0_NAMES = ("cls_token", "mask_token", "pos_embed")


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


def _key_name(k) -> str:
  return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def layer_id(path, num_layers: int) -> int:
  """VideoMAE's layer id of a parameter: 0 for the patch embedding (and cls/mask token, pos
  embedding), i + 1 for `blocks/<i>/...`, num_layers + 1 for the rest (fc_norm, head, ...).

  `path`: a JAX key path (tree_map_with_path), a sequence of names, or a string joined by "/"
  or "." ("encoder/blocks/3/attn/qkv/kernel", "blocks.3.attn.qkv.weight"). A leading `encoder`
  is dropped (our classifier nests the backbone under it; VideoMAE's finetune names do not).
  """
  if isinstance(path, str):
    names = path.replace(".", "/").split("/")
  else:
    names = [_key_name(k) for k in path]
  if names and names[0] == "encoder":
    names = names[1:]
  if not names:
    raise ValueError(f"empty parameter path {path!r}")
  if names[0] in LAYER0_NAMES or names[0] == "patch_embed":
    return 0
  if names[0] == "blocks":
    if len(names) < 2 or not names[1].isdigit():
      raise ValueError(f"no block index in parameter path {path!r}")
    block = int(names[1])
    if block >= num_layers:
      raise ValueError(f"block {block} in {path!r} but num_layers={num_layers}")
    return block + 1
  return num_layers + 1


def layer_decay_scales(params, decay: float, num_layers: int):
  """A pytree like `params` of Python floats: decay ** (num_layers + 1 - layer_id)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: float(decay ** (num_layers + 1 - layer_id(path, num_layers))), params)


def scale_by_pytree(scales) -> optax.GradientTransformation:
  """Multiplies each update leaf by the matching leaf of `scales` (same tree as the params)."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    updates = jax.tree_util.tree_map(
        lambda u, s: u * jnp.asarray(s, dtype=u.dtype), updates, scales)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(optim_config, schedule: Schedule,
                   lr_scales=None) -> optax.GradientTransformation:
  """AdamW with optional global-norm clipping (`grad_clip`, None or <= 0 to disable).

  `lr_scales`: None, or a pytree like the params (e.g. `layer_decay_scales`) whose leaves
  multiply each leaf's final AdamW update, weight-decay term included (VideoMAE's per-group
  `lr_scale`). Clipping uses the global norm of the unscaled gradients, as in VideoMAE. None
  keeps the optimizer state's structure unchanged.
  """
  parts = []
  if optim_config.get("grad_clip", None):
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip))
  parts.append(optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2,
                           eps=optim_config.get("eps", 1e-8),
                           weight_decay=optim_config.weight_decay, mask=decay_mask))
  if lr_scales is not None:
    parts.append(scale_by_pytree(lr_scales))
  return optax.chain(*parts)


def ema_update(ema_params, params, decay: float):
  """One EMA step, float32: decay * ema + (1 - decay) * params (timm `ModelEma.update`, which
  VideoMAE uses with `--model_ema`, decay 0.9999)."""
  def step(e, p):
    e = jnp.asarray(e, jnp.float32)
    return decay * e + (1.0 - decay) * jnp.asarray(p, jnp.float32)
  return jax.tree_util.tree_map(step, ema_params, params)


def init_state(model, optimizer: optax.GradientTransformation, ema: bool = False) -> dict:
  """The train state {"step", "params", "opt_state"[, "ema"]}: plain pytrees, checkpointed as
  they are.

  params is the model's `nnx.Param` state as nested dicts (`nnx.to_pure_dict`); `ema` adds a
  copy of them as the start of the parameters' moving average.
  """
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": optimizer.init(params)}
  if ema:
    state["ema"] = jax.tree.map(jnp.array, params)
  return state


def for_model(optim_config, model_cfg, schedule: Schedule, params) -> optax.GradientTransformation:
  """The optimizer of a run: `make_optimizer`, with layer decay for a classifier.

  `params` may be abstract (only its tree paths are read). Layer decay applies to the classifier
  (model_cfg.num_classes > 0) when optim.layer_decay < 1, over the encoder's blocks.
  """
  scales = None
  if model_cfg.num_classes > 0 and optim_config.get("layer_decay", 1.0) < 1.0:
    scales = layer_decay_scales(params, optim_config.layer_decay, model_cfg.encoder_depth)
  return make_optimizer(optim_config, schedule, lr_scales=scales)
