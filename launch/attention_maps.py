r"""Draws a trained encoder's attention on one clip (MGM Fig. 6d / 7): where a query token looks.

  python launch/attention_maps.py --workdir=RUN --video=FILE --out=attention.png \
      [--step=-1 --block=-1 --query=t,i,j --weights=auto --dpi=100]

Loads the run's config and checkpoint (`--step` -1: the latest; `--weights` as in
launch/export_torch.py: auto = the EMA where the run keeps one), decodes the clip as the run's
single-view evaluation does (the centre window of `model.num_frames` frames at `data.stride`, or
the segment centres; short side resized to the crop, centre crop), and runs the encoder on every
token (`mgm_jax/attention_maps.py`).

One column per temporal token slot: the slot's first frame with the query token's head-averaged
attention in block `--block` overlaid as a heat map (one colour scale for the whole clip); the
query token is outlined in cyan in its slot. `--query` is (slot, row, col) of the token grid,
default its centre. Divided attention (model.attention='divided') shows the composition of the
block's temporal and spatial weights (see mgm_jax/attention_maps.py); the title says which.
Expected failures (no run, no checkpoint, an unreadable video, a bad flag) end in one line.
"""

from __future__ import annotations

import io
import os
import pathlib
import sys
import types
from collections.abc import Sequence

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from input_pipeline import eval_pipeline
from mgm_jax import attention_maps
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import inference
from mgm_jax import model as model_lib
from mgm_jax import torch_io
# pylint: enable=g-import-not-at-top,wrong-import-position

# Own flag registry: other launch scripts define --out too, and tests import several of them.
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "A pretraining or finetuning run.", flag_values=FLAGS)
flags.DEFINE_string("video", None, "The video file.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output PNG.", flag_values=FLAGS)
flags.DEFINE_integer("step", -1, "Checkpoint step (-1: the latest).", flag_values=FLAGS)
flags.DEFINE_integer("block", -1, "Encoder block (negative: from the end).", flag_values=FLAGS)
flags.DEFINE_string("query", "", "Query token 'slot,row,col' (default: the centre token).",
                    flag_values=FLAGS)
flags.DEFINE_enum("weights", "auto", list(inference.WEIGHTS),
                  "auto: the EMA if the run keeps one, else the params.", flag_values=FLAGS)
flags.DEFINE_integer("dpi", 100, "Figure resolution.", flag_values=FLAGS)

_PROG = "attention_maps"
# Failures reported as one line: those of torch_io's run commands, checkpoints, decoding.
_EXPECTED = (*torch_io.EXPECTED_ERRORS, checkpoint_lib.CheckpointError)


def _fail(message: str) -> SystemExit:
  return SystemExit(f"{_PROG}: error: {' '.join(str(message).split())}")


def _parse_args(argv: Sequence[str]) -> types.SimpleNamespace:
  FLAGS.unparse_flags()  # main() may run more than once in a process (tests)
  try:
    rest = FLAGS([_PROG, *argv])[1:]
  except flags.Error as e:
    raise _fail(e) from None
  if rest:
    raise _fail(f"unexpected arguments {rest}")
  for name in ("workdir", "video", "out"):
    if not FLAGS[name].value:
      raise _fail(f"--{name} is required")
  args = types.SimpleNamespace(**{name: FLAGS[name].value for name in (
      "workdir", "video", "out", "step", "block", "query", "weights", "dpi")})
  args.out = pathlib.Path(args.out)
  if args.query:
    try:
      args.query = tuple(int(v) for v in args.query.split(","))
    except ValueError:
      raise _fail(f"--query {args.query!r}: give slot,row,col as integers") from None
  else:
    args.query = None
  return args


def load_clip(video: str, config, model_cfg: model_lib.ModelConfig) -> np.ndarray:
  """uint8 [T, S, S, 3]: the run's single-view evaluation clip of `video`
  (`eval_pipeline.LoadViews` with `mgm_jax.evaluate.eval_spec`'s view, at the model's size)."""
  if not os.path.isfile(video):
    raise FileNotFoundError(f"--video {video}: no such file")
  height, width = model_cfg.img_size
  if height != width:
    raise ValueError(f"model.img_size {model_cfg.img_size}: evaluation crops are square")
  spec = eval_pipeline.EvalSpec(num_frames=model_cfg.num_frames, stride=config.data.stride,
                                sampling=config.data.sampling, size=height)
  element = eval_pipeline.LoadViews(spec).map((0, {"path": video, "label": 0}))
  error = eval_pipeline.decode_text(element["error"])
  if error:
    raise ValueError(f"--video {video}: cannot decode: {error}")
  return element["frames"][0]


def render(frames: np.ndarray, amap: attention_maps.AttentionMap, *, tubelet: int, patch: int,
           title: str, dpi: int = 100) -> plt.Figure:
  """The figure of the module docstring: frames uint8 [T, S, S, 3], amap.weights [t, h, w]."""
  num_slots = amap.weights.shape[0]
  size_h, size_w = frames.shape[1:3]
  fig, axes = plt.subplots(1, num_slots, figsize=(1.9 * num_slots, 2.4), dpi=dpi,
                           squeeze=False)
  extent = (0, size_w, size_h, 0)
  vmax = max(float(amap.weights.max()), 1e-12)
  q_slot, q_row, q_col = amap.query
  for s in range(num_slots):
    ax = axes[0, s]
    ax.imshow(frames[s * tubelet], extent=extent)
    ax.imshow(amap.weights[s], cmap="inferno", vmin=0, vmax=vmax, alpha=0.6, extent=extent,
              interpolation="nearest")
    if s == q_slot:
      ax.add_patch(plt.Rectangle((q_col * patch, q_row * patch), patch, patch, fill=False,
                                 edgecolor="cyan", lw=1.5))
    ax.set_title(f"slot {s}: {amap.weights[s].sum():.2f}", fontsize=8)
    ax.set_xlim(0, size_w)
    ax.set_ylim(size_h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig


def _title(name: str, step: int, amap: attention_maps.AttentionMap) -> str:
  kind = ("divided: spatial x temporal weights composed" if amap.attention == "divided"
          else "joint attention")
  return (f"{name} (step {step}): block {amap.block}, query {amap.query}, {kind}\n"
          "share of the attention per slot in the titles")


def _save_png(fig: plt.Figure, path: pathlib.Path, dpi: int) -> None:
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=dpi, format="png")
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.open(buffer).convert("RGB").save(path, optimize=True)


def run(args: types.SimpleNamespace) -> pathlib.Path:
  """Loads, decodes, computes and draws (raises the _EXPECTED errors)."""
  loaded = torch_io.load_run(args.workdir, None if args.step < 0 else args.step, args.weights)
  model_cfg = loaded.model.config
  # Bad --query / --block fail before the decode.
  attention_maps.resolve_query(model_cfg.grid, args.query)
  attention_maps.resolve_block(model_cfg.encoder_depth, args.block)
  frames = load_clip(args.video, loaded.config, model_cfg)
  video, _ = model_lib.normalize(frames[None])
  amap = attention_maps.attention_map(loaded.model, video, block=args.block, query=args.query)
  fig = render(frames, amap, tubelet=model_cfg.tubelet, patch=model_cfg.patch,
               title=_title(pathlib.Path(args.video).name, loaded.step, amap), dpi=args.dpi)
  _save_png(fig, args.out, args.dpi)
  plt.close(fig)
  return args.out


def main(argv: Sequence[str]) -> pathlib.Path:
  """Runs the command line (without the program name); returns the PNG path. Expected
  failures raise SystemExit with one line."""
  args = _parse_args(argv)
  try:
    return run(args)
  except _EXPECTED as e:
    raise _fail(torch_io.error_line(e)) from None


if __name__ == "__main__":
  print(main(sys.argv[1:]))
