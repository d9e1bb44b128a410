r"""Cost of optical-flow guidance against codec motion vectors, per clip, side by side.

    python benchmarks/bench_flow.py            # 8 clips, strides 2 and 4, ~2 min on 2 cores
    python benchmarks/bench_flow.py --small    # 2 small clips, a few seconds (the smoke test)

The paper (Table 4b) guides MGM by RAFT optical flow or by the codec's motion vectors and reports
the flow ~30x slower (RAFT on a GPU against vectors read while decoding). Here the flow is OpenCV
DIS on the CPU (`input_pipeline/optical_flow.py`; RAFT's weights cannot be downloaded offline),
so the numbers compare DIS flow with vectors, on the same decoder, in one run.

Generates `--num_clips` synthetic 320x240 H.264 videos (`synthetic.make_video`, codec "h264":
no B-frames, one reference, keyframe every 16; three moving objects and a camera pan of
(1.5, 0.5) px/frame), then times, for 16 sampled frames at each stride (the same random window
per clip for every variant):

  rgb         decode + RGB of the sampled frames, no motion       `decode.decode_frames`
  mv          + motion from the codec's vectors                    `decode_clip(motion="mv")`
  flow        + motion from optical flow (DIS "medium", default)   `decode_clip(motion="flow")`
  flow_fast   the same with DIS "ultrafast" (the cheapest preset)  `flow_preset="ultrafast"`

One clip at a time in this thread; OpenCV runs one thread (`optical_flow.OPENCV_THREADS`), as in
the pipeline. In each repeat every clip runs every variant back to back, in an order rotated per
clip, so that load changes on a shared machine hit all variants alike. The table reports the
median over repeats of the wall-clock and CPU (process) time per clip. Ratios:

  flow / mv (clip)    median over repeats of the per-repeat ratio of whole-clip times;
  flow / mv (motion)  the motion part alone, (variant - rgb) / (mv - rgb) from the median times:
                      what the motion costs on top of the decode both need. null when mv's
                      motion part is not measurably above zero (noise on a busy machine).

Ends with ONE JSON line {"benchmark": "flow", ...}.
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
from input_pipeline import synthetic
import interleaved  # benchmarks/interleaved.py  # pylint: disable=g-bad-import-order

_NUM_CLIPS = flags.DEFINE_integer('num_clips', 8, 'Generated videos (one clip each).')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 80, 'Frames per generated video.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed passes over all clips per variant.')
_STRIDES = flags.DEFINE_list('strides', ['2', '4'], 'Temporal strides to time.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the videos and the sampled windows.')
_SMALL = flags.DEFINE_bool('small', False, 'Quick run: 2 clips of 160x120, 1 repeat.')

NUM_SAMPLES = 16
SIZE = (240, 320)
SMALL_SIZE = (120, 160)
PAN = (1.5, 0.5)
NUM_OBJECTS = 3
VARIANTS: dict[str, Callable] = {
    'rgb': lambda path, idx: decode.decode_frames(path, idx),
    'mv': lambda path, idx: decode.decode_clip(path, idx, motion='mv'),
    'flow': lambda path, idx: decode.decode_clip(path, idx, motion='flow'),
    'flow_fast': lambda path, idx: decode.decode_clip(path, idx, motion='flow',
                                                      flow_preset='ultrafast'),
}
FLOWS = ('flow', 'flow_fast')


def _time_all(clips: list, repeats: int) -> tuple[dict, dict]:
  """{variant: [total wall s per repeat]}, {variant: [total CPU s per repeat]}."""
  names = list(VARIANTS)
  for name in names:  # warm-up: page cache, imports, OpenCV's first call
    VARIANTS[name](*clips[0])
  return interleaved.time_variants(VARIANTS, clips, repeats)


def _motion_ratio(times: dict, name: str) -> float | None:
  """(name - rgb) / (mv - rgb) of the median times; None if mv's motion part is <= 0."""
  med = {n: statistics.median(v) for n, v in times.items()}
  base = med['mv'] - med['rgb']
  if base <= 0:
    return None
  return round((med[name] - med['rgb']) / base, 2)


def _bench_stride(paths: list[pathlib.Path], num_frames: int, stride: int, repeats: int,
                  rng: np.random.Generator) -> dict:
  span = (NUM_SAMPLES - 1) * stride + 1
  starts = rng.integers(0, num_frames - span + 1, size=len(paths))
  clips = [(p, np.arange(s, s + span, stride)) for p, s in zip(paths, starts)]
  wall, cpu = _time_all(clips, repeats)
  n = len(clips)
  out = {'variants': {}}
  for name in VARIANTS:
    out['variants'][name] = {
        'ms_per_clip': round(1e3 * statistics.median(wall[name]) / n, 2),
        'cpu_ms_per_clip': round(1e3 * statistics.median(cpu[name]) / n, 2)}
  for name in FLOWS:
    out[f'{name}_over_mv_clip'] = round(statistics.median(
        f / m for f, m in zip(wall[name], wall['mv'])), 2)
    out[f'{name}_over_mv_clip_cpu'] = round(statistics.median(
        f / m for f, m in zip(cpu[name], cpu['mv'])), 2)
    out[f'{name}_over_mv_motion'] = _motion_ratio(wall, name)
    out[f'{name}_over_mv_motion_cpu'] = _motion_ratio(cpu, name)
    # One flow per sampled frame: the motion part per frame pair.
    extra = statistics.median(cpu[name]) - statistics.median(cpu['rgb'])
    out[f'{name}_cpu_ms_per_pair'] = round(1e3 * extra / (n * NUM_SAMPLES), 2)
  return out


def _fmt(value) -> str:
  return '-' if value is None else f'{value:.2f}'


def _print_table(results: dict, strides: list[int]) -> None:
  print('| variant | ' + ' | '.join(f'stride {s}: ms/clip | CPU ms/clip' for s in strides)
        + ' |')
  print('|---|' + '---:|---:|' * len(strides))
  for name in VARIANTS:
    cells = []
    for s in strides:
      v = results[f'stride{s}']['variants'][name]
      cells += [f'{v["ms_per_clip"]:.1f}', f'{v["cpu_ms_per_clip"]:.1f}']
    print(f'| {name} | ' + ' | '.join(cells) + ' |')
  print()
  print('| ratio | ' + ' | '.join(f'stride {s}: wall | CPU' for s in strides) + ' |')
  print('|---|' + '---:|---:|' * len(strides))
  for name in FLOWS:
    for part in ('clip', 'motion'):
      cells = []
      for s in strides:
        r = results[f'stride{s}']
        cells += [_fmt(r[f'{name}_over_mv_{part}']), _fmt(r[f'{name}_over_mv_{part}_cpu'])]
      print(f'| {name} / mv ({part}) | ' + ' | '.join(cells) + ' |')
  print()


def main(argv):
  del argv
  small = _SMALL.value
  num_clips = 2 if small else _NUM_CLIPS.value
  repeats = 1 if small else _REPEATS.value
  num_frames = (NUM_SAMPLES - 1) * max(int(s) for s in _STRIDES.value) + 1 if small else (
      _VIDEO_FRAMES.value)
  height, width = SMALL_SIZE if small else SIZE
  strides = [int(s) for s in _STRIDES.value]
  rng = np.random.default_rng(_SEED.value)
  with tempfile.TemporaryDirectory(prefix='mgm_bench_flow_') as tmp:
    start = time.perf_counter()
    paths = [synthetic.make_video(pathlib.Path(tmp) / f'clip_{i:03d}', codec='h264',
                                  num_frames=num_frames, height=height, width=width,
                                  num_objects=NUM_OBJECTS, camera_pan=PAN,
                                  seed=_SEED.value * 1000 + i).path
             for i in range(num_clips)]
    gen_s = time.perf_counter() - start
    results = {f'stride{s}': _bench_stride(paths, num_frames, s, repeats, rng) for s in strides}

  print(f'{num_clips} clips of {NUM_SAMPLES} frames, {width}x{height} H.264 with '
        f'{NUM_OBJECTS} movers and a {PAN} px/frame pan ({num_frames}-frame videos, generated '
        f'in {gen_s:.1f} s), median of {repeats} repeats\n')
  _print_table(results, strides)
  print('paper (Table 4b): RAFT optical flow ~30x the cost of codec vectors\n')
  print(json.dumps({'benchmark': 'flow', 'small': small, 'num_clips': num_clips,
                    'repeats': repeats, 'video_frames': num_frames, 'height': height,
                    'width': width, 'num_samples': NUM_SAMPLES, 'strides': strides,
                    'generate_s': round(gen_s, 2), **results}))


if __name__ == '__main__':
  app.run(main)
