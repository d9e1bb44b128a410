r"""Visible motion energy per mask strategy: does the mask hide what moves? (MGM's premise.)

    python launch/motion_energy.py --videos='/data/clips/*.mp4' \
        [--strategies=random,tube,mgm,mgm/box,oracle_box --ratios=0.5,0.75,0.9 --seeds=3 \
         --num_frames=16 --stride=2 --size=224 --tubelet=2 --patch=16 --motion=auto \
         --compensate_camera --jitter=1.0]
    python launch/motion_energy.py --generate=8     # generated videos (movers, some panning)

For every video: the evaluation pipeline's clip (centred window, centre crop), each token's
frame-difference energy, and for every strategy, ratio and seed the fraction of the energy under
visible tokens (definitions: input_pipeline/motion_energy.py). A motion-blind mask leaves about
1 - ratio visible; one that follows the motion leaves less; the oracles bound what a box (or any
per-slot mask) could reach.

--videos: comma-separated globs, files, or list files (.txt / .csv / .list: one video per line,
`path` or VideoMAE's `path label`, relative to the list file's folder). Unreadable videos are
skipped, counted and named in one line. --strategies: `strategy[/pool[/smooth]]` (pool: one of
masking.POOLS where the installed masking has them; smooth: MGM's temporal smoothing radius),
or oracle_box / oracle_tokens; default: all strategies, MGM with each pool, both oracles.

Prints a Markdown table (rows: variants; columns: ratios, mean +- std over clips x seeds, and the
mean time to build one mask) and ends with one JSON line.
"""

from __future__ import annotations

import glob
import json
import math
import pathlib
import sys
import tempfile
from collections.abc import Sequence

from absl import flags

# pylint: disable=g-import-not-at-top,wrong-import-position
from input_pipeline import decode
from input_pipeline import motion
from input_pipeline import motion_energy
from input_pipeline import saliency
from mgm_jax import masking
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FlagValues()  # own flags: several launch tools may share one process (tests)
flags.DEFINE_list("videos", [], "Globs, files or list files of videos.", flag_values=FLAGS)
flags.DEFINE_integer("generate", 0, "First write N generated videos and use them.",
                     flag_values=FLAGS)
flags.DEFINE_string("generate_dir", "", "Where --generate writes (default: a temp dir).",
                    flag_values=FLAGS)
flags.DEFINE_list("strategies", [], "Variants strategy[/pool[/smooth]] (default: all).",
                  flag_values=FLAGS)
flags.DEFINE_list("ratios", ["0.5", "0.75", "0.9"], "Mask ratios.", flag_values=FLAGS)
flags.DEFINE_integer("seeds", 3, "Masks per clip, variant and ratio.", flag_values=FLAGS)
flags.DEFINE_integer("num_frames", 16, "Frames per clip.", flag_values=FLAGS)
flags.DEFINE_integer("stride", 2, "Frame sampling stride.", flag_values=FLAGS)
flags.DEFINE_integer("size", 224, "Crop side in pixels.", flag_values=FLAGS)
flags.DEFINE_integer("tubelet", 2, "Frames per token.", flag_values=FLAGS)
flags.DEFINE_integer("patch", 16, "Pixels per token side.", flag_values=FLAGS)
flags.DEFINE_enum("motion", "auto", decode.MOTION_POLICIES, "Motion the masks follow.",
                  flag_values=FLAGS)
flags.DEFINE_bool("compensate_camera", False, "Subtract each frame's dominant motion.",
                  flag_values=FLAGS)
flags.DEFINE_float("jitter", 1.0, "MGM/SMM box aspect jitter (config.mask.jitter).",
                   flag_values=FLAGS)

_LIST_SUFFIXES = (".txt", ".csv", ".list")


def _parse_args(argv: Sequence[str]):
  FLAGS.unparse_flags()
  try:
    rest = FLAGS(["motion_energy.py", *argv])[1:]
  except flags.Error as e:
    raise SystemExit(f"error: {e}") from None
  if rest:
    raise SystemExit(f"error: unexpected arguments {rest}")
  if not FLAGS.videos and FLAGS.generate <= 0:
    raise SystemExit("error: give --videos or --generate=N")
  if min(FLAGS.num_frames, FLAGS.stride, FLAGS.tubelet, FLAGS.patch, FLAGS.size) < 1:
    raise SystemExit("error: --num_frames, --stride, --tubelet, --patch and --size must be >= 1")
  if FLAGS.num_frames % FLAGS.tubelet or FLAGS.size % FLAGS.patch or FLAGS.seeds < 1:
    raise SystemExit("error: need num_frames % tubelet == 0, size % patch == 0, seeds >= 1")
  try:
    ratios = [float(r) for r in FLAGS.ratios]
    variants = ([motion_energy.Variant.parse(s) for s in FLAGS.strategies] if FLAGS.strategies
                else motion_energy.default_variants())
    grid = (FLAGS.num_frames // FLAGS.tubelet, FLAGS.size // FLAGS.patch,
            FLAGS.size // FLAGS.patch)
    for r in ratios:
      masking.num_masked("tube", grid, r)  # checks the ratio on this grid
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  return variants, ratios


def _list_file(path: pathlib.Path) -> list[str]:
  videos = []
  for line in path.read_text(encoding="utf-8").splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    fields = line.rsplit(None, 1)
    name = fields[0] if len(fields) == 2 and fields[1].lstrip("-").isdigit() else line
    videos.append(str(path.parent / name))
  return videos


def find_videos(items: Sequence[str]) -> list[str]:
  """Expands --videos: globs (sorted), list files, or paths kept as given (checked on decode)."""
  videos = []
  for item in items:
    path = pathlib.Path(item)
    if path.suffix.lower() in _LIST_SUFFIXES and path.is_file():
      videos += _list_file(path)
    elif glob.has_magic(item):
      videos += sorted(glob.glob(item))
    else:
      videos.append(item)
  return videos


def measure(videos: Sequence[str], variants, ratios) -> tuple[motion_energy.Report, dict]:
  """Runs every video; returns the report and {"skipped": [(video, reason)], "sources": {}}."""
  report = motion_energy.Report()
  skipped, sources = [], {}
  for index, video in enumerate(videos):
    try:
      view, previous = motion_energy.load_view(
          video, num_frames=FLAGS.num_frames, stride=FLAGS.stride, size=FLAGS.size,
          motion=FLAGS.motion, compensate_camera=FLAGS.compensate_camera)
    except decode.VideoDecodeError as e:
      skipped.append((video, e.reason))
      continue
    sources[view.motion_source] = sources.get(view.motion_source, 0) + 1
    energy = motion_energy.token_energy(view.frames, previous, tubelet=FLAGS.tubelet,
                                        patch=FLAGS.patch)
    slots = motion.to_token_slots(view.magnitude, FLAGS.tubelet)
    motion_energy.add_clip(report, energy, slots, view.name, variants=variants, ratios=ratios,
                           seeds=FLAGS.seeds, clip_index=index, jitter=FLAGS.jitter)
  return report, {"skipped": skipped, "sources": sources}


def _cell(mean: float, std: float) -> str:
  return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def table(report: motion_energy.Report, variants, ratios) -> str:
  """The Markdown table: one row per variant, one column per ratio, then µs per mask."""
  head = ("| variant | " + " | ".join(f"r={r:g}" for r in ratios) + " | µs/mask |\n"
          "|---|" + "---|" * (len(ratios) + 1) + "\n")
  head += ("| (motion-blind: 1 - r) | " + " | ".join(f"{1 - r:.3f}" for r in ratios)
           + " | |\n")
  rows = []
  for v in variants:
    cells = [_cell(*report.summary(v.name, r)[:2]) for r in ratios]
    count = report.mask_count.get(v.name, 0)
    micros = 1e6 * report.mask_seconds.get(v.name, 0.0) / count if count else math.nan
    rows.append(f"| {v.name} | " + " | ".join(cells) + f" | {micros:.0f} |")
  return head + "\n".join(rows)


def _json_value(x: float):
  return None if not math.isfinite(x) else round(x, 5)


def summary_json(report: motion_energy.Report, variants, ratios, num_videos: int,
                 info: dict) -> dict:
  results = {}
  for v in variants:
    results[v.name] = {}
    for r in ratios:
      mean, std, n = report.summary(v.name, r)
      results[v.name][f"{r:g}"] = {"mean": _json_value(mean), "std": _json_value(std), "n": n}
  mask_us = {v.name: _json_value(1e6 * report.mask_seconds.get(v.name, 0.0)
                                 / max(report.mask_count.get(v.name, 0), 1)) for v in variants}
  return {"videos": num_videos, "measured": num_videos - len(info["skipped"])
          - len(report.static_clips), "skipped": len(info["skipped"]),
          "static": len(report.static_clips), "motion_sources": info["sources"],
          "motion": FLAGS.motion, "compensate_camera": FLAGS.compensate_camera,
          "num_frames": FLAGS.num_frames, "stride": FLAGS.stride, "size": FLAGS.size,
          "seeds": FLAGS.seeds, "visible_fraction": results, "mask_us": mask_us}


def run(videos: Sequence[str], variants, ratios) -> dict:
  """Measures, prints the report, returns the JSON summary."""
  report, info = measure(videos, variants, ratios)
  if info["skipped"]:
    named = "; ".join(f"{v} ({why})" for v, why in info["skipped"])
    print(f"skipped {len(info['skipped'])} of {len(videos)} videos: {named}")
  if report.static_clips:
    print(f"left out {len(report.static_clips)} clips without any frame difference: "
          + ", ".join(report.static_clips))
  sources = ", ".join(f"{k}: {n}" for k, n in sorted(info["sources"].items()))
  print(f"Visible fraction of the frame-difference energy ({len(videos)} videos; motion "
        f"{FLAGS.motion}{' camera-compensated' if FLAGS.compensate_camera else ''} -> {sources}; "
        f"{FLAGS.num_frames} frames at stride {FLAGS.stride}, {FLAGS.size}px crop, "
        f"{FLAGS.seeds} seeds; mean ± std over clips x seeds; lower = the mask hides more "
        "motion)\n")
  print(table(report, variants, ratios))
  summary = summary_json(report, variants, ratios, len(videos), info)
  print(json.dumps(summary))
  return summary


def main(argv: Sequence[str]) -> dict:
  """Runs the command line (without the program name); returns the JSON summary."""
  variants, ratios = _parse_args(argv)
  videos = find_videos(FLAGS.videos)
  if FLAGS.generate <= 0:
    if not videos:
      raise SystemExit(f"error: --videos={','.join(FLAGS.videos)} matches no file")
    return run(videos, variants, ratios)
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(FLAGS.generate_dir or tmp)
    frames = max(48, (FLAGS.num_frames - 1) * FLAGS.stride + 1 + FLAGS.stride)
    saliency.generate(root, FLAGS.generate, num_frames=frames)
    generated = sorted(str(p) for p in root.glob("generated_*.mp4"))
    return run(videos + generated, variants, ratios)


if __name__ == "__main__":
  main(sys.argv[1:])
