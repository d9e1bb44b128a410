r"""Times the per-clip input pipeline: decoding, motion from codec vectors, and the MGM mask.

    python benchmarks/bench_input_pipeline.py                    # 16 clips, ~1 min on 2 cores
    python benchmarks/bench_input_pipeline.py --num_clips 64 --repeats 7

Generates `--num_clips` synthetic 320x240 H.264 videos (`synthetic.make_video`, codec "h264":
no B-frames, one reference, keyframe every 16 frames) into a temporary directory, then times, for
16 sampled frames at stride 4 and at stride 2 (the same random window per clip for every variant):

  (a) decode + RGB of the sampled frames only, no motion     `decode.decode_frames`
  (b) + motion field from the codec's motion vectors          `decode.decode_clip(motion="mv")`
  (c) (b) + the MGM mask                                      + `motion.to_token_slots` +
                                                                `masking.make_mask("mgm", ...)`
  (d) motion from luma frame differences instead of vectors  `decode.decode_clip("frame_diff")`
  (e) the MGM mask alone, on (b)'s motion

One clip at a time in this thread (FFmpeg keeps its default slice threading, which does nothing
for these single-slice streams). The variants run side by side: in each repeat every clip runs
every variant back to back, in an order rotated per clip, and the table reports the median over
repeats of wall-clock clips/s, plus CPU time per clip (process time, FFmpeg's threads included:
less sensitive to other jobs on a busy machine). Ratios are medians of per-repeat ratios.
Ends with ONE JSON line holding every number, the ratio (c)/(a) (target >= 0.90) and the mask's
ms/clip (target <= 0.1).
"""

from __future__ import annotations

import json
import pathlib
import statistics
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
import numpy as np

from input_pipeline import decode
from input_pipeline import motion as motion_lib
from input_pipeline import synthetic
from mgm_jax import masking
import interleaved  # benchmarks/interleaved.py  # pylint: disable=g-bad-import-order

_NUM_CLIPS = flags.DEFINE_integer('num_clips', 16, 'Generated videos (one clip each).')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 96, 'Frames per generated video.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed passes over all clips per variant.')
_STRIDES = flags.DEFINE_list('strides', ['4', '2'], 'Temporal strides to time.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the videos and the sampled windows.')

NUM_SAMPLES = 16
GRID = (8, 14, 14)
TUBELET = 2
MASK_RATIO = 0.75
MASK_REPEATS = 20  # mask-only passes per repeat (it is ~1000x cheaper than decoding)


def _mask(clip, rng: np.random.Generator) -> np.ndarray:
  slots = motion_lib.to_token_slots(clip.magnitude, TUBELET)
  return masking.make_mask('mgm', grid=GRID, mask_ratio=MASK_RATIO, rng=rng, motion=slots)


def _variants(rng: np.random.Generator) -> dict[str, Callable]:
  return {
      'a_decode_rgb': lambda path, idx: decode.decode_frames(path, idx),
      'b_motion_vectors': lambda path, idx: decode.decode_clip(path, idx, motion='mv'),
      'c_vectors_mask': lambda path, idx: _mask(decode.decode_clip(path, idx, motion='mv'), rng),
      'd_frame_diff': lambda path, idx: decode.decode_clip(path, idx, motion='frame_diff'),
  }


def _bench_stride(paths: list[pathlib.Path], stride: int, rng: np.random.Generator) -> dict:
  span = (NUM_SAMPLES - 1) * stride + 1
  starts = rng.integers(0, _VIDEO_FRAMES.value - span + 1, size=len(paths))
  clips = [(p, np.arange(s, s + span, stride)) for p, s in zip(paths, starts)]
  variants = _variants(rng)
  names = list(variants)
  for name in names:  # warm-up: page cache, imports, allocator
    for path, indices in clips[:2]:
      variants[name](path, indices)
  wall, cpu = interleaved.time_variants(variants, clips, _REPEATS.value)  # side by side

  # (e) mask alone, on precomputed motion.
  slots = [motion_lib.to_token_slots(decode.decode_clip(p, i, motion='mv').magnitude, TUBELET)
           for p, i in clips]
  mask_s = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for _ in range(MASK_REPEATS):
      for s in slots:
        masking.make_mask('mgm', grid=GRID, mask_ratio=MASK_RATIO, rng=rng, motion=s)
    mask_s.append((time.perf_counter() - start) / MASK_REPEATS)

  n = len(clips)
  out = {}
  for name in names:
    out[name] = {'clips_per_s': round(n / statistics.median(wall[name]), 2),
                 'ms_per_clip': round(1e3 * statistics.median(wall[name]) / n, 3),
                 'cpu_ms_per_clip': round(1e3 * statistics.median(cpu[name]) / n, 3)}
  out['e_mask_only'] = {'clips_per_s': round(n / statistics.median(mask_s), 1),
                        'ms_per_clip': round(1e3 * statistics.median(mask_s) / n, 4)}
  # Throughput ratios: the median over repeats of each repeat's ratio (the variants of one
  # repeat ran interleaved, so a load change affects both sides of a ratio alike).
  def ratio(times, name):
    return round(statistics.median(a / b for a, b in zip(times['a_decode_rgb'], times[name])), 3)

  out['ratio_c_over_a'] = ratio(wall, 'c_vectors_mask')
  out['ratio_c_over_a_cpu'] = ratio(cpu, 'c_vectors_mask')
  out['ratio_b_over_a'] = ratio(wall, 'b_motion_vectors')
  out['ratio_d_over_a'] = ratio(wall, 'd_frame_diff')
  out['mask_ms_per_clip'] = out['e_mask_only']['ms_per_clip']
  return out


def main(argv):
  del argv
  rng = np.random.default_rng(_SEED.value)
  with tempfile.TemporaryDirectory(prefix='mgm_bench_') as tmp:
    start = time.perf_counter()
    paths = [synthetic.make_video(pathlib.Path(tmp) / f'clip_{i:03d}', codec='h264',
                                  num_frames=_VIDEO_FRAMES.value, seed=_SEED.value * 1000 + i).path
             for i in range(_NUM_CLIPS.value)]
    gen_s = time.perf_counter() - start
    results = {f'stride{s}': _bench_stride(paths, int(s), rng) for s in _STRIDES.value}

  print(f'{_NUM_CLIPS.value} clips of 16 frames, 320x240 H.264 ({_VIDEO_FRAMES.value}-frame '
        f'videos, generated in {gen_s:.1f} s), median of {_REPEATS.value} repeats\n')
  header = f'{"variant":22s}' + ''.join(
      f'{"stride " + s + ": clips/s":>22s}{"ms/clip":>9s}{"cpu ms":>8s}' for s in _STRIDES.value)
  print(header)
  for name in ('a_decode_rgb', 'b_motion_vectors', 'c_vectors_mask', 'd_frame_diff',
               'e_mask_only'):
    row = f'{name:22s}'
    for s in _STRIDES.value:
      r = results[f'stride{s}'][name]
      row += f'{r["clips_per_s"]:22.1f}{r["ms_per_clip"]:9.3f}{r.get("cpu_ms_per_clip", 0):8.2f}'
    print(row)
  for s in _STRIDES.value:
    r = results[f'stride{s}']
    print(f'stride {s}: (c)/(a) = {r["ratio_c_over_a"]:.3f} wall, {r["ratio_c_over_a_cpu"]:.3f} '
          f'CPU (target >= 0.90); mask {r["mask_ms_per_clip"]:.4f} ms/clip (target <= 0.1)')
  print(json.dumps({'benchmark': 'input_pipeline', 'num_clips': _NUM_CLIPS.value,
                    'repeats': _REPEATS.value, 'video_frames': _VIDEO_FRAMES.value,
                    'generate_s': round(gen_s, 2), **results}))


if __name__ == '__main__':
  app.run(main)
