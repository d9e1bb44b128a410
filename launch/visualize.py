r"""Draws a clip's token mask next to its motion, to see the mask follow what moves (MGM Fig. 2/6).

  python launch/visualize.py VIDEO --strategy=mgm --out=masks.png \
      [--num_frames=16 --stride=4 --size=224 --mask_ratio=0.75 --seed=0 \
       --motion=auto|mv|frame_diff --compensate_camera --tubelet=2 --patch=16]
  python launch/visualize.py --synthetic --out masks.png   # a generated video instead of VIDEO

One column per temporal token slot: on top the slot's first sampled frame with the masked tokens
tinted and darkened and the token grid drawn faintly; below it the slot's motion magnitude as a heat
map, the flow as arrows (one per token, where the clip has flow; lengths comparable across slots),
the mask's outline (cyan) and the slot's strongest motion cell (+, the centre MGM aims its box at).
The arrows are the codec flow as decoded: with --compensate-camera only the heat map (the magnitude
the mask is steered by) has the camera motion removed.
The title names the strategy, the motion source and the masked count of every slot.
"""

from __future__ import annotations

import io
import pathlib
import sys
import tempfile
import types
from collections.abc import Sequence

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image

# pylint: disable=g-import-not-at-top,wrong-import-position
from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import motion
from input_pipeline import sampling
from input_pipeline import synthetic
from input_pipeline import transforms
from mgm_jax import masking
# pylint: enable=g-import-not-at-top,wrong-import-position

_MASK_TINT = np.array([0.1, 0.35, 0.9])  # masked tokens: blended towards blue and darkened
_MASK_ALPHA = 0.45


_OUT = flags.DEFINE_string("out", None, "Output PNG.")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False,
                               "Generate a synthetic video with several moving objects instead.")
_STRATEGY = flags.DEFINE_enum("strategy", "mgm", masking.STRATEGIES, "Mask strategy.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 16, "Frames per clip.")
_STRIDE = flags.DEFINE_integer("stride", 4, "Frame sampling stride.")
_SIZE = flags.DEFINE_integer("size", 224, "Crop side in pixels.")
_MASK_RATIO = flags.DEFINE_float("mask_ratio", 0.75, "Fraction of tokens masked.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the mask (and of a synthetic video).")
_MOTION = flags.DEFINE_enum("motion", "auto", decode.MOTION_POLICIES, "Motion source.")
_COMPENSATE = flags.DEFINE_bool("compensate_camera", False,
                                "Subtract each frame's dominant motion.")
_TUBELET = flags.DEFINE_integer("tubelet", 2, "Frames per token.")
_PATCH = flags.DEFINE_integer("patch", 16, "Pixels per token side.")
_DPI = flags.DEFINE_integer("dpi", 100, "Figure resolution.")


def _parse_args(argv: Sequence[str]) -> tuple[types.SimpleNamespace, str | None]:
  """Parses and checks the command line (absl; exits with a usage message on errors).

  Returns (the flag values, the VIDEO argument or None).
  """
  flags.FLAGS.unparse_flags()  # main() may run more than once in a process (tests)
  try:
    rest = flags.FLAGS(["visualize.py", *argv])[1:]
    if flags.FLAGS.out is None:
      raise flags.Error("--out is required")
  except flags.Error as e:
    raise SystemExit(f"error: {e}") from None
  args = types.SimpleNamespace(**{name: flags.FLAGS[name].value for name in (
      "out", "synthetic", "strategy", "num_frames", "stride", "size", "mask_ratio", "seed",
      "motion", "compensate_camera", "tubelet", "patch", "dpi")})
  args.out = pathlib.Path(args.out)
  if len(rest) > 1 or (not rest) == (not args.synthetic):
    raise SystemExit("error: give either VIDEO or --synthetic")
  if args.num_frames % args.tubelet or args.size % args.patch or args.patch % clip_lib.MOTION_CELL:
    raise SystemExit("error: need num_frames % tubelet == 0, size % patch == 0 and "
                     "patch % 8 == 0")
  return args, (rest[0] if rest else None)


def _token_flow(flow: np.ndarray, tubelet: int, cells_per_token: int) -> np.ndarray:
  """Mean flow per token: [T, Gh, Gw, 2] -> [T / tubelet, Gh / c, Gw / c, 2]."""
  t, gh, gw, _ = flow.shape
  c = cells_per_token
  return flow.reshape(t // tubelet, tubelet, gh // c, c, gw // c, c, 2).mean(axis=(1, 3, 5))


def render(clip: clip_lib.Clip, mask: np.ndarray, slots: np.ndarray, *, tubelet: int, patch: int,
           title: str, dpi: int = 100) -> plt.Figure:
  """Draws the figure described in the module docstring.

  Args:
    clip: the cropped clip (frames [T, S, S, 3], motion on the S / 8 grid).
    mask: bool [T / tubelet, S / patch, S / patch], True = masked.
    slots: [T / tubelet, Gh, Gw] motion magnitude per slot (what the mask was steered by).
    tubelet: frames per temporal token slot.
    patch: token side in pixels.
    title: the figure title.
    dpi: resolution of the figure.

  Returns:
    The figure (the caller saves and closes it).
  """
  num_slots = mask.shape[0]
  size_h, size_w = clip.frames.shape[1:3]
  fig, axes = plt.subplots(2, num_slots, figsize=(1.9 * num_slots, 4.3), dpi=dpi, squeeze=False)
  extent = (0, size_w, size_h, 0)
  vmax = max(float(slots.max()), 1e-6)
  flow = None
  if clip.flow is not None:
    flow = _token_flow(clip.flow, tubelet, patch // clip_lib.MOTION_CELL)
    centres_y, centres_x = np.mgrid[patch / 2:size_h:patch, patch / 2:size_w:patch]
    max_flow = max(float(np.hypot(flow[..., 0], flow[..., 1]).max()), 1e-6)
    arrow_scale = max_flow / (1.5 * patch)  # the clip's fastest token: an arrow 1.5 tokens long
  for s in range(num_slots):
    pixels = np.kron(mask[s], np.ones((patch, patch))) > 0
    frame = clip.frames[s * tubelet].astype(np.float32) / 255.0
    frame[pixels] = 0.8 * ((1 - _MASK_ALPHA) * frame[pixels] + _MASK_ALPHA * _MASK_TINT)
    top, bottom = axes[0, s], axes[1, s]
    top.imshow(frame, extent=extent)
    top.set_title(f"slot {s}: {int(mask[s].sum())} masked\n"
                  f"frame {int(clip.frame_indices[s * tubelet])}", fontsize=8)
    for line in range(patch, max(size_h, size_w), patch):
      top.axhline(line, color="white", lw=0.3, alpha=0.3)
      top.axvline(line, color="white", lw=0.3, alpha=0.3)
    bottom.imshow(slots[s], cmap="inferno", vmin=0, vmax=vmax, extent=extent,
                  interpolation="nearest")
    bottom.contour(pixels, levels=[0.5], colors="cyan", linewidths=1.0,
                   extent=(0, size_w, 0, size_h), origin="upper")
    peak_y, peak_x = np.unravel_index(np.argmax(slots[s]), slots[s].shape)
    cell_h, cell_w = size_h / slots.shape[1], size_w / slots.shape[2]
    bottom.plot((peak_x + 0.5) * cell_w, (peak_y + 0.5) * cell_h, "c+", ms=9, mew=2)
    if flow is not None:
      u, v = flow[s, ..., 0], flow[s, ..., 1]
      keep = np.hypot(u, v) > 0.05 * max_flow
      bottom.quiver(centres_x[keep], centres_y[keep], u[keep], v[keep], color="white",
                    angles="xy", scale_units="xy", scale=arrow_scale, width=0.01)
    for ax in (top, bottom):
      ax.set_xlim(0, size_w)
      ax.set_ylim(size_h, 0)
      ax.set_xticks([])
      ax.set_yticks([])
  axes[1, 0].set_ylabel("motion", fontsize=8)
  axes[0, 0].set_ylabel("mask", fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig


def _describe(args: types.SimpleNamespace, clip: clip_lib.Clip, mask: np.ndarray) -> str:
  """The figure title: clip, strategy, motion source and the masked count per slot."""
  counts = " ".join(str(int(c)) for c in mask.reshape(mask.shape[0], -1).sum(axis=1))
  camera = ", camera-compensated" if args.compensate_camera else ""
  return (f"{clip.name}: strategy {args.strategy}, ratio {args.mask_ratio}, motion "
          f"{clip.motion_source}{camera}\nmasked per slot: {counts} (of "
          f"{mask.shape[1] * mask.shape[2]})")


def _save_png(fig: plt.Figure, path: pathlib.Path, dpi: int) -> None:
  """Saves `fig` as a 256-colour PNG (a third of the size of full colour, for docs and logs)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=dpi, format="png")
  image = Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path, optimize=True)


def visualize(args: types.SimpleNamespace, video: pathlib.Path, name: str) -> pathlib.Path:
  """Decodes, crops, masks and renders one clip of `video` (called `name`) into `args.out`."""
  num_video_frames = decode.probe(video).num_frames
  indices = sampling.sample_frame_indices(num_video_frames, args.num_frames, args.stride, None,
                                          mode="center")
  clip = decode.decode_clip(video, indices, motion=args.motion,
                            compensate_camera=args.compensate_camera, name=name)
  clip = transforms.center_crop(clip, args.size, resize_short=args.size)
  slots = motion.to_token_slots(clip.magnitude, args.tubelet)
  tokens = args.size // args.patch
  mask = masking.make_mask(args.strategy, grid=(slots.shape[0], tokens, tokens),
                           mask_ratio=args.mask_ratio, rng=np.random.default_rng(args.seed),
                           motion=slots)
  fig = render(clip, mask, slots, tubelet=args.tubelet, patch=args.patch,
               title=_describe(args, clip, mask), dpi=args.dpi)
  _save_png(fig, args.out, args.dpi)
  plt.close(fig)
  return args.out


def main(argv: Sequence[str]) -> pathlib.Path:
  """Runs the command line (without the program name); returns the PNG path."""
  args, video = _parse_args(argv)
  if video is not None:
    return visualize(args, pathlib.Path(video), pathlib.Path(video).name)
  with tempfile.TemporaryDirectory() as tmp:
    made = synthetic.make_video(
        pathlib.Path(tmp) / "synthetic.mp4", num_frames=(args.num_frames - 1) * args.stride + 1,
        num_objects=4, object_size=(32, 64), seed=args.seed)
    return visualize(args, made.path, f"synthetic video (seed {args.seed})")


if __name__ == "__main__":
  try:
    print(main(sys.argv[1:]))
  except decode.VideoDecodeError as e:
    sys.exit(f"error: {e}")
