r"""MGM's saliency score on annotated videos: mean motion inside the boxes / mean outside.

    python launch/saliency.py --boxes=boxes.jsonl [--motion=mv --compensate_camera]
    python launch/saliency.py --generate=8     # generated videos with their exact boxes

The box file format, the score and which motion it reads: input_pipeline/saliency.py (the
paper: 1.47 on SSv2, 1.28 on K400, codec motion vectors). --generate=N first writes N generated
videos (2-4 movers; every odd one panning) and their per-frame boxes to --generate_dir (default:
a temp dir) and scores those, added to --boxes' videos if both are given.

Prints one line per video (frames scored, motion source, mean magnitude inside and outside, the
score), the mean of the per-video scores and the pooled score, and ends with one JSON line.
Videos that cannot be decoded (or whose annotated frames lie past their end) are skipped,
counted and named in one line; a malformed box file is one error line naming its line.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import tempfile
from collections.abc import Sequence

from absl import flags

from input_pipeline import decode
from input_pipeline import saliency

FLAGS = flags.FlagValues()  # own flags: several launch tools may share one process (tests)
flags.DEFINE_string("boxes", "", "Box file (JSON Lines, see input_pipeline/saliency.py).",
                    flag_values=FLAGS)
flags.DEFINE_integer("generate", 0, "First write N generated videos with their boxes.",
                     flag_values=FLAGS)
flags.DEFINE_string("generate_dir", "", "Where --generate writes (default: a temp dir).",
                    flag_values=FLAGS)
flags.DEFINE_enum("motion", "mv", decode.MOTION_POLICIES, "Motion source (paper: mv).",
                  flag_values=FLAGS)
flags.DEFINE_bool("compensate_camera", False, "Subtract each frame's dominant motion.",
                  flag_values=FLAGS)


def _json_value(x: float):
  return round(x, 5) if math.isfinite(x) else None


def _fmt(x: float) -> str:
  return f"{x:.3f}" if math.isfinite(x) or math.isinf(x) else "n/a"


def score_all(entries: Sequence[saliency.VideoBoxes]) -> dict:
  """Scores every entry, prints the report, returns the JSON summary."""
  scores, skipped = [], []
  for entry in entries:
    try:
      scores.append(saliency.score_video(entry, motion=FLAGS.motion,
                                         compensate_camera=FLAGS.compensate_camera))
    except decode.VideoDecodeError as e:
      skipped.append((entry.video, e.reason))
  if skipped:
    print(f"skipped {len(skipped)} of {len(entries)} videos: "
          + "; ".join(f"{v} ({why})" for v, why in skipped))
  camera = ", camera-compensated" if FLAGS.compensate_camera else ""
  print(f"Saliency score = mean motion magnitude inside the boxes / outside (motion "
        f"{FLAGS.motion}{camera})\n")
  print("| video | frames | motion | inside | outside | score |\n|---|---|---|---|---|---|")
  for s in scores:
    print(f"| {pathlib.Path(s.video).name} | {s.frames} | {s.motion_source} | "
          f"{_fmt(s.mean_inside)} | {_fmt(s.mean_outside)} | {_fmt(s.score)} |")
  mean, pooled = saliency.mean_score(scores), saliency.pooled(scores)
  print(f"\nmean of per-video scores: {_fmt(mean)} ({sum(math.isfinite(s.score) for s in scores)}"
        f" finite); pooled: {_fmt(pooled)}")
  summary = {
      "videos": len(entries), "scored": len(scores), "skipped": len(skipped),
      "motion": FLAGS.motion, "compensate_camera": FLAGS.compensate_camera,
      "mean_score": _json_value(mean), "pooled_score": _json_value(pooled),
      "per_video": {s.video: {"frames": s.frames, "motion_source": s.motion_source,
                              "inside": _json_value(s.mean_inside),
                              "outside": _json_value(s.mean_outside),
                              "score": _json_value(s.score)} for s in scores}}
  print(json.dumps(summary))
  return summary


def main(argv: Sequence[str]) -> dict:
  """Runs the command line (without the program name); returns the JSON summary."""
  FLAGS.unparse_flags()
  try:
    rest = FLAGS(["saliency.py", *argv])[1:]
  except flags.Error as e:
    raise SystemExit(f"error: {e}") from None
  if rest or (not FLAGS.boxes and FLAGS.generate <= 0):
    raise SystemExit("error: give --boxes=FILE and/or --generate=N (and nothing else)")
  try:
    entries = saliency.read_boxes(FLAGS.boxes) if FLAGS.boxes else []
  except saliency.BoxFileError as e:
    raise SystemExit(f"error: {e}") from None
  if FLAGS.generate <= 0:
    return score_all(entries)
  with tempfile.TemporaryDirectory() as tmp:
    made = saliency.generate(pathlib.Path(FLAGS.generate_dir or tmp), FLAGS.generate)
    return score_all(entries + saliency.read_boxes(made))


if __name__ == "__main__":
  main(sys.argv[1:])
