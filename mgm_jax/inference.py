"""Loading a trained run for inference: features, reconstructions, export.

A run directory (the trainer's `workdir`) holds `config.json` (the run's ConfigDict) and
`checkpoints/` (Orbax, see `mgm_jax.checkpoint`). No data is needed to load it:

    from mgm_jax import inference

    run = inference.load("/path/to/workdir")           # latest step; or step=N
    feats = inference.features(run, frames)             # uint8 [B, T, H, W, 3] -> [B, N, D]
    pred = inference.reconstruct(run, frames, mask)     # mask bool [B, t, h, w] -> [B, Nm, 1536]
    run.model, run.config, run.step                     # nnx MaskedAutoencoder, ConfigDict, int
    inference.save(workdir, config, params, step=0)     # a run to start training from

The model is rebuilt for inference: drop path is off (`model.config.drop_path_rate == 0`), which
changes no parameter. `run.config` is the config exactly as trained.
"""

from __future__ import annotations

import dataclasses
import os

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import model as model_lib
from mgm_jax import optim
from mgm_jax import targets as targets_lib
from mgm_jax import workdir as workdir_lib
from mgm_jax import reconstruct as reconstruct_lib


@dataclasses.dataclass
class Loaded:
  """A restored run: the model with its trained weights, the run's config and the step."""
  model: model_lib.MaskedAutoencoder | model_lib.VideoClassifier
  config: ml_collections.ConfigDict
  step: int


def _optimizer(config, model_cfg: model_lib.ModelConfig, model):
  # The optimizer state's structure does not depend on the schedule's step counts, so a 1-step
  # schedule stands in for the real one.
  schedule = optim.make_schedule(config.optim, config.batch_size, 1, 1)
  return optim.for_model(config.optim, model_cfg, schedule,
                         nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def abstract_train_state(config: ml_collections.ConfigDict, model_cfg: model_lib.ModelConfig):
  """ShapeDtypeStructs of the trainer's state {"step", "params", "opt_state"[, "ema"]}, built
  without data."""
  def init():
    model = model_lib.make_model(model_cfg, nnx.Rngs(0))
    return optim.init_state(model, _optimizer(config, model_cfg, model),
                            ema=config.optim.get("ema_decay", 0.0) > 0)
  device = jax.local_devices()[0]
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                     sharding=jax.sharding.SingleDeviceSharding(device)),
      jax.eval_shape(init))


# Which parameters of a run to use: its parameters, their EMA, or "auto" (the EMA where the run
# keeps one, optim.ema_decay > 0: what the run's own validation and test evaluate).
WEIGHTS = ('auto', 'params', 'ema')


def uses_ema(config: ml_collections.ConfigDict, weights: str) -> bool:
  """Whether `weights` (one of WEIGHTS) means the EMA for a run with `config`."""
  if weights not in WEIGHTS:
    raise ValueError(f'weights {weights!r}: choose one of {WEIGHTS}')
  if weights == 'auto':
    return config.get('optim', {}).get('ema_decay', 0.0) > 0
  return weights == 'ema'


def load(workdir: str | os.PathLike, step: int | None = None, ema: bool = False,
         best: bool = False) -> Loaded:
  """Restores the model of `workdir` at `step` (default: the latest checkpoint); with `ema`,
  the run's moving average of the parameters (a run trained with optim.ema_decay > 0); with
  `best`, from <workdir>/best (a finetuning run's best validation checkpoint)."""
  config = workdir_lib.read_config(workdir)
  model_cfg = targets_lib.model_config(config, drop_path_rate=0.0)
  abstract = abstract_train_state(config, model_cfg)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(os.fspath(workdir),
                                                  'best' if best else 'checkpoints'),
                                     async_save=False, read_only=True)
  try:
    step, state = ckpt.restore(abstract, step=step)
  finally:
    ckpt.close()
  if ema and 'ema' not in state:
    raise ValueError(f'{workdir}: the run keeps no EMA of its parameters (optim.ema_decay = 0)')
  model = model_lib.from_params(model_cfg, state['ema' if ema else 'params'])
  return Loaded(model=model, config=config, step=int(step))


def save(workdir: str | os.PathLike, config: ml_collections.ConfigDict, params,
         step: int = 0) -> str:
  """Writes a run the trainer resumes from: config.json + checkpoints/<step> (fresh optimizer).

  The inverse of `load`: `params` (our pure-dict layout, e.g. from `mgm_jax.export`) must fit
  `config.model`. The checkpoint holds "state" {"step", "params", "opt_state"} exactly as the
  trainer saves it, with the optimizer state of `config.optim` freshly initialised and no data
  iterator state (a run started from it begins its data stream at the start).
  """
  workdir = os.path.abspath(os.fspath(workdir))
  model_cfg = targets_lib.model_config(config)
  abstract = abstract_train_state(config, model_cfg)
  model = model_lib.from_params(model_cfg, params)
  train_state = optim.init_state(model, _optimizer(config, model_cfg, model),
                                 ema=config.optim.get('ema_decay', 0.0) > 0)
  train_state['step'] = jnp.asarray(step, jnp.int32)
  jax.tree.map(lambda a, s: _check_leaf(a, s), train_state, abstract)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    f.write(config.to_json(indent=2))
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), async_save=False)
  try:
    ckpt.save(step, train_state, force=True)
  finally:
    ckpt.close()
  return workdir


def _check_leaf(array, abstract) -> None:
  if array.shape != abstract.shape or array.dtype != abstract.dtype:
    raise ValueError(f'train state leaf {array.shape} {array.dtype} != the trainer\'s '
                     f'{abstract.shape} {abstract.dtype}')


@nnx.jit
def _encode(model, frames_uint8):
  x, _ = model_lib.normalize(frames_uint8)
  return model.encode(x, deterministic=True)


def features(loaded: Loaded, frames_uint8) -> jax.Array:
  """Encoder features of every token (final norm applied): uint8 [B, T, H, W, 3] -> [B, N, D]."""
  return _encode(loaded.model, jnp.asarray(frames_uint8))


def reconstruct(loaded: Loaded, frames_uint8, mask) -> np.ndarray:
  """Predicted (normalised, if trained with norm_pix) pixels of the masked tokens.

  mask: bool [B, t, h, w] or [B, N], True = masked, the same count in every row.
  Returns float32 [B, num_masked, patch_dim] in `x[mask]` order; see `reconstruct.py` to view it.
  """
  mask = np.asarray(mask, bool)
  num_masked = int(mask.reshape(mask.shape[0], -1).sum(axis=1)[0])
  return reconstruct_lib.reconstruct_batch(loaded.model, frames_uint8, mask, num_masked)
