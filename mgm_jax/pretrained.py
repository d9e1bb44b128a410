"""The weights a finetuning run starts from (`config.init`), fitted into the classifier.

Sources: a mgm-jax workdir (pretraining or finetuning; its checkpoint at `config.init_step`, or
the latest), a Hugging Face VideoMAE folder or an official VideoMAE `.pth` (read by
`torch_io.read_init_weights`). What is carried over, following VideoMAE's finetuning:

- the encoder's patch embedding and blocks, always (they must match model.* in width, depth,
  heads, patch and tubelet; anything else is an error naming the parameter);
- not the pretraining encoder's final norm, decoder or mask token (the classifier mean-pools and
  has its own `fc_norm`, which starts at ones / zeros);
- `fc_norm` from a classifier, and its `head` only if it has the same number of classes
  (otherwise the head starts fresh, as VideoMAE drops a head of another shape; the log says so).

Frames and image size may differ from the source's: the position table is a fixed sin-cos table
rebuilt for the new token grid (the log says so), nothing else depends on them.
"""

from __future__ import annotations


from absl import logging
from etils import epath
import jax
import numpy as np

from mgm_jax import model as model_lib


def _is_workdir(path: str) -> bool:
  """A mgm-jax run directory, local or remote (gs://...)."""
  root = epath.Path(path)
  return (root / "checkpoints").is_dir() and (root / "config.json").exists()


def read(src: str, step: int | None = None,
         model_cfg: model_lib.ModelConfig | None = None) -> tuple[dict, str]:
  """`src` -> (our pure-dict params of its model, a description for the log)."""
  if _is_workdir(src):
    from mgm_jax import inference  # pylint: disable=g-import-not-at-top
    loaded = inference.load(src, step)
    params = jax.tree.map(np.asarray, nnx_params(loaded.model))
    return params, f"workdir {src} at step {loaded.step} ({type(loaded.model).__name__})"
  if not epath.Path(src).exists():
    raise FileNotFoundError(f"config.init: {src} does not exist (a mgm-jax workdir, a Hugging "
                            "Face VideoMAE folder or an official VideoMAE .pth)")
  from mgm_jax import torch_io  # pylint: disable=g-import-not-at-top
  params, info = torch_io.read_init_weights(src, model_cfg)
  dropped = sorted({k.split(".")[0] for k in info.get("dropped", {})})
  return params, (f"{src} ({info['style']} layout"
                  + (f"; left out: {', '.join(dropped)}" if dropped else "") + ")")


def nnx_params(model) -> dict:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _flat(tree) -> dict[str, object]:
  return {_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


_ENCODER = ("encoder/patch_embed/", "encoder/blocks/")
_HEAD = ("fc_norm/", "head/")


def fit(fresh: dict, source: dict, model_cfg: model_lib.ModelConfig,
        source_grid_tokens: int | None = None) -> tuple[dict, list[str]]:
  """Copies `source`'s encoder (and head, if it fits) into `fresh` (the classifier's params).

  Returns (params, log lines). Raises ValueError naming every encoder parameter that is
  missing from the source or has another shape.
  """
  src, want = _flat(source), _flat(fresh)
  problems = []
  for name, target in want.items():
    if name.startswith(_ENCODER):
      if name not in src:
        problems.append(f"{name}: missing from the source")
      elif np.shape(src[name]) != np.shape(target):
        problems.append(f"{name}: source {np.shape(src[name])} != model {np.shape(target)}")
  extra = sorted(n for n in src if n.startswith(_ENCODER) and n not in want)
  if extra:  # e.g. a divided-attention encoder's temporal_* into a joint model: not dropped
    problems.append(f"{extra[0]} (and {len(extra) - 1} more): in the source, not in the model "
                    "(depth or model.attention differs?)")
  if problems:
    raise ValueError("config.init does not fit model.* (width, depth, heads, patch, tubelet, "
                     f"attention must match): {'; '.join(problems[:6])}"
                     + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""))
  def fits(prefix):
    return all(name in src and np.shape(src[name]) == np.shape(want[name])
               for name in want if name.startswith(prefix))
  carried = _ENCODER + tuple(p for p in _HEAD if fits(p))

  def pick(path, target):
    name = _name(path)
    if name.startswith(carried):
      return np.asarray(src[name], np.asarray(target).dtype)
    return target

  out = jax.tree_util.tree_map_with_path(pick, fresh)
  lines = []
  dropped = sorted({"/".join(n.split("/")[:2 if n.startswith(("encoder/", "decoder/")) else 1])
                    for n in src if not n.startswith(carried)})
  if dropped:
    lines.append(f"not carried over (as in VideoMAE's finetuning): {', '.join(dropped)}")
  for part in ("fc_norm", "head"):
    lines.append(f"{part} carried over from the source classifier" if f"{part}/" in carried
                 else f"{part} starts fresh ({model_cfg.num_classes} classes)")
  if source_grid_tokens is not None and source_grid_tokens != model_cfg.num_patches:
    lines.append(f"position table rebuilt for {model_cfg.num_patches} tokens {model_cfg.grid} "
                 f"(the source used {source_grid_tokens})")
  return out, lines


def initial_params(config, model_cfg: model_lib.ModelConfig, fresh: dict) -> dict:
  """The classifier's starting params: `fresh` (random init) with `config.init` fitted in."""
  if not config.init:
    logging.info("finetuning from random initialisation (config.init is empty)")
    return fresh
  step = None if config.init_step < 0 else config.init_step
  source, what = read(config.init, step, model_cfg)
  tokens = None
  if _is_workdir(config.init):
    from mgm_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    tokens = model_lib.model_config_from(workdir_lib.read_config(config.init).model).num_patches
  params, lines = fit(fresh, source, model_cfg, tokens)
  logging.info("initialised from %s", what)
  for line in lines:
    logging.info("init: %s", line)
  return params
