r"""One clip reconstructed under each mask strategy, side by side: what does each mask leave?

    python launch/reconstruction_panels.py --workdir=/runs/mgm_b --video=clip.mp4 --out=panels.png \
        [--strategies=random,tube,mgm --ratio=0.75 --step=-1 --weights=auto --seed=0 --frames=4 \
         --motion=auto --compensate_camera]

The clip is the evaluation pipeline's (input_pipeline/motion_energy.py `load_view`: centred
window, centre crop) with the run's frames, stride, crop size and motion settings (--motion and
--compensate_camera override the run's data.motion / data.compensate_camera). Every strategy
masks the SAME cropped clip at the same ratio (default: the run's mask.ratio) and jitter, with a
fresh `np.random.default_rng(seed)` each; strategies are written `strategy[/pool[/smooth]]`,
oracle_box and oracle_tokens included (see motion_energy.py). The model (the run's checkpoint at
--step, -1 = the latest; its EMA where the run keeps one unless --weights=params) predicts the
masked tokens (`mgm_jax.inference.reconstruct`); patches are shown as `mgm_jax.reconstruct` does
(normalised-pixel predictions with the true patch's mean and std).

The figure: the first row the original frames, then one row per strategy; columns: for each of
--frames frames (the first frame of evenly spaced token slots), the masked input (grey =
masked) and the reconstruction (visible patches as given). Each strategy's label gives the
mean squared error on the masked pixels (0..1 scale) and its visible fraction of the clip's
frame-difference energy (motion_energy.py), so the panels can be read against the report.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
from input_pipeline import decode
from input_pipeline import motion
from input_pipeline import motion_energy
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import inference
from mgm_jax import masking
from mgm_jax import model as model_lib
from mgm_jax import reconstruct
from mgm_jax import workdir as workdir_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FlagValues()  # own flags: several launch tools may share one process (tests)
flags.DEFINE_string("workdir", None, "A pretraining run's workdir.", flag_values=FLAGS)
flags.DEFINE_string("video", None, "The video file.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output PNG.", flag_values=FLAGS)
flags.DEFINE_list("strategies", ["random", "tube", "mgm"], "strategy[/pool[/smooth]] per row.",
                  flag_values=FLAGS)
flags.DEFINE_float("ratio", -1.0, "Mask ratio (-1: the run's mask.ratio).", flag_values=FLAGS)
flags.DEFINE_integer("step", -1, "Checkpoint step (-1: the latest).", flag_values=FLAGS)
flags.DEFINE_enum("weights", "auto", inference.WEIGHTS, "Parameters or their EMA.",
                  flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of every strategy's mask.", flag_values=FLAGS)
flags.DEFINE_integer("frames", 4, "Frames (token slots) shown per strategy.", flag_values=FLAGS)
flags.DEFINE_enum("motion", None, decode.MOTION_POLICIES, "Motion source (default: the run's).",
                  flag_values=FLAGS)
flags.DEFINE_bool("compensate_camera", None, "Camera compensation (default: the run's).",
                  flag_values=FLAGS)
flags.DEFINE_integer("dpi", 100, "Figure resolution.", flag_values=FLAGS)


def _parse_args(argv: Sequence[str]) -> list[motion_energy.Variant]:
  FLAGS.unparse_flags()
  try:
    rest = FLAGS(["reconstruction_panels.py", *argv])[1:]
    missing = [n for n in ("workdir", "video", "out") if FLAGS[n].value is None]
    if missing or rest:
      raise flags.Error(f"need --workdir, --video and --out (missing {missing}; unexpected "
                        f"{rest})")
    if FLAGS.frames < 1 or not FLAGS.strategies:
      raise flags.Error("need --frames >= 1 and at least one strategy")
    if FLAGS.ratio >= 0 and not 0 < FLAGS.ratio < 1:
      raise flags.Error(f"--ratio={FLAGS.ratio} must lie in (0, 1) (or -1: the run's)")
    return [motion_energy.Variant.parse(s) for s in FLAGS.strategies]
  except (flags.Error, ValueError) as e:
    raise SystemExit(f"error: {e}") from None


def _load(workdir: str) -> inference.Loaded:
  config = workdir_lib.read_config(workdir)
  run = inference.load(workdir, step=None if FLAGS.step < 0 else FLAGS.step,
                       ema=inference.uses_ema(config, FLAGS.weights))
  if not isinstance(run.model, model_lib.MaskedAutoencoder):
    raise SystemExit(f"error: {workdir} is a finetuning run (model.num_classes > 0); "
                     "reconstructions need a pretraining run")
  return run


def _masked_mse(frames: np.ndarray, recon: np.ndarray, mask: np.ndarray, tubelet: int,
                patch: int) -> float:
  """Mean squared error (0..1 pixels) over the masked tokens' pixels."""
  pixels = np.asarray(mask, bool)
  for axis, size in enumerate((tubelet, patch, patch)):
    pixels = np.repeat(pixels, size, axis=axis)
  diff = (recon.astype(np.float32) - frames.astype(np.float32)) / 255.0
  return float(np.mean(np.square(diff[pixels])))


def render(original: np.ndarray, rows: list[tuple[str, np.ndarray, np.ndarray]],
           frame_ids: Sequence[int], title: str, dpi: int = 100,
           video_frames: Sequence[int] | None = None) -> plt.Figure:
  """The figure: original row, then per strategy (label, masked video, reconstruction).

  frame_ids: the clip frames shown; video_frames: their indices in the video (for the titles).
  """
  k = len(frame_ids)
  fig, axes = plt.subplots(1 + len(rows), 2 * k, figsize=(1.6 * 2 * k, 1.7 * (1 + len(rows))),
                           dpi=dpi, squeeze=False)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  for c, f in enumerate(frame_ids):
    axes[0, 2 * c].imshow(original[f])
    video_frame = "" if video_frames is None else f" (video {video_frames[c]})"
    axes[0, 2 * c].set_title(f"clip frame {f}{video_frame}", fontsize=7)
    axes[0, 2 * c + 1].axis("off")
    for r, (_, masked, recon) in enumerate(rows, start=1):
      axes[r, 2 * c].imshow(masked[f])
      axes[r, 2 * c + 1].imshow(recon[f])
      if r == 1:
        axes[r, 2 * c].set_title("input", fontsize=7)
        axes[r, 2 * c + 1].set_title("reconstruction", fontsize=7)
  axes[0, 0].set_ylabel("original", fontsize=7)
  for r, (label, _, _) in enumerate(rows, start=1):
    axes[r, 0].set_ylabel(label, fontsize=7)
  fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  return fig


def panels(run: inference.Loaded, video: pathlib.Path, variants) -> tuple[plt.Figure, dict]:
  """Builds the figure for one video; returns it and {strategy: {"mse", "visible_energy"}}."""
  cfg, data, mask_cfg = run.model.config, run.config.data, run.config.mask
  height, width = cfg.img_size
  if height != width:
    raise SystemExit(f"error: the run's model.img_size {cfg.img_size} is not square")
  tubelet, patch = cfg.tubelet, cfg.patch
  ratio = mask_cfg.ratio if FLAGS.ratio < 0 else FLAGS.ratio
  view, previous = motion_energy.load_view(
      video, num_frames=cfg.num_frames, stride=data.stride, size=height,
      motion=FLAGS.motion or data.motion,
      compensate_camera=(data.compensate_camera if FLAGS.compensate_camera is None
                         else FLAGS.compensate_camera),
      flow_preset=data.get("flow_preset", "medium"))
  frames = view.frames
  slots = motion.to_token_slots(view.magnitude, tubelet)
  energy = motion_energy.token_energy(frames, previous, tubelet=tubelet, patch=patch)
  grid = energy.shape
  rows, stats = [], {}
  norm_pix = run.config.loss.get("norm_pix", True)
  for variant in variants:
    if (variant.strategy in masking.MOTION_STRATEGIES and variant.pool == "top1"
        and not variant.smooth):  # a bare "mgm": as the run masked
      variant = motion_energy.Variant(variant.strategy, mask_cfg.get("pool", "top1"),
                                      mask_cfg.get("smooth", 0))
    mask = motion_energy.make_variant_mask(variant, grid, ratio, np.random.default_rng(FLAGS.seed),
                                           slots, jitter=mask_cfg.jitter, energy=energy)
    pred = inference.reconstruct(run, frames[None], mask[None])[0]
    recon = reconstruct.reconstruct_video(frames, mask, pred, tubelet=tubelet, patch=patch,
                                          norm_pix=norm_pix)
    mse = _masked_mse(frames, recon, mask, tubelet, patch)
    visible = motion_energy.visible_fraction(energy, mask)
    stats[variant.name] = {"mse": mse, "visible_energy": visible}
    visible_text = "n/a" if visible is None else f"{visible:.2f}"
    rows.append((f"{variant.name}\nMSE {mse:.4f}\nvisible energy {visible_text}",
                 reconstruct.masked_video(frames, mask, tubelet=tubelet, patch=patch), recon))
  shown = np.unique(np.linspace(0, grid[0] - 1, min(FLAGS.frames, grid[0])).round().astype(int))
  title = (f"{view.name}: step {run.step}, ratio {ratio}, motion {view.motion_source}, "
           f"frames {view.frame_indices[0]}..{view.frame_indices[-1]}")
  frame_ids = [int(s) * tubelet for s in shown]
  return render(frames, rows, frame_ids, title, FLAGS.dpi,
                [int(view.frame_indices[f]) for f in frame_ids]), stats


def main(argv: Sequence[str]) -> pathlib.Path:
  """Runs the command line (without the program name); returns the PNG path."""
  variants = _parse_args(argv)
  video = pathlib.Path(FLAGS.video)
  try:
    decode.probe(video)  # an unusable video fails before the model is loaded
    fig, stats = panels(_load(FLAGS.workdir), video, variants)
  except (decode.VideoDecodeError, workdir_lib.WorkdirError, checkpoint_lib.CheckpointError,
          FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=FLAGS.dpi)
  plt.close(fig)
  for name, s in stats.items():
    visible = "n/a" if s["visible_energy"] is None else f"{s['visible_energy']:.3f}"
    print(f"{name}: masked-pixel MSE {s['mse']:.5f}, visible energy {visible}")
  return out


if __name__ == "__main__":
  print(main(sys.argv[1:]))
