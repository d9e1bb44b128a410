r"""Times `masking.make_mask` per clip for every strategy and every MGM pool x smoothing option.

    python benchmarks/bench_mask.py                  # ~15 s on 2 cores (videos included)
    python benchmarks/bench_mask.py --repeats 15 --calls 400
    python benchmarks/bench_mask.py --small          # a few seconds: a smoke run (tests)

Data: real motion maps. --num_videos synthetic 224x224 H.264 videos (`synthetic.make_video`,
codec "h264": no B-frames, one reference; 4 textured movers, --video_frames frames) are decoded
once per 16-frame window at stride 4 (`decode.decode_clip(motion="mv")`), and each window's
magnitudes are pooled over the 2-frame tubelets (`motion.to_token_slots`): [8, 28, 28] maps on
the (8, 14, 14) token grid of the usual 224 crop (--windows windows per video).

Options: the strategies random, tube, block, smm, smm_sparse (motion ignored), then mgm and
mgm_sparse with every pool of `masking.POOLS` and smooth in {0, 1}, named "mgm/box/s1".

Method: --repeats repeats; in each, every option makes --calls masks (cycling over the maps,
one Generator shared by all) in an order rotated per repeat, so a load change on a shared
machine hits all options alike. Per option: the median over repeats of wall ms per clip
(`time.perf_counter`), its minimum, and the median CPU ms per clip (`time.process_time`: less
sensitive to other jobs). Target: <= 0.1 ms per clip for every option.

Ends with ONE JSON line: {"benchmark": "mask", ...} with `rows` (every number per option),
`ms_per_clip` (option -> median wall ms), the maximum over options and the options over target.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from input_pipeline import decode
from input_pipeline import motion as motion_lib
from input_pipeline import synthetic
from mgm_jax import masking

_SMALL = flags.DEFINE_bool('small', False, 'Quick smoke run: 1 video, few repeats and calls.')
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 4, 'Generated videos.')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 96, 'Frames per generated video.')
_WINDOWS = flags.DEFINE_integer('windows', 4, '16-frame windows (motion maps) per video.')
_REPEATS = flags.DEFINE_integer('repeats', 9, 'Timed repeats per option.')
_CALLS = flags.DEFINE_integer('calls', 300, 'make_mask calls per option and repeat.')
_MASK_RATIO = flags.DEFINE_float('mask_ratio', 0.75, 'Masking ratio.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the videos, windows and masks.')

SIZE = 224
NUM_SAMPLES, STRIDE, TUBELET = 16, 4, 2
GRID = (NUM_SAMPLES // TUBELET, SIZE // 16, SIZE // 16)
TARGET_MS = 0.1
STATIC = ('random', 'tube', 'block', 'smm', 'smm_sparse')
SMOOTHS = (0, 1)


def options() -> list[tuple[str, str, str, int]]:
  """(name, strategy, pool, smooth) of every timed option."""
  rows = [(s, s, 'top1', 0) for s in STATIC]
  rows += [(f'{s}/{p}/s{k}', s, p, k) for s in masking.MOTION_STRATEGIES for p in masking.POOLS
           for k in SMOOTHS]
  return rows


def _motion_maps(tmp: pathlib.Path, num_videos: int, video_frames: int, windows: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
  """[8, 28, 28] token-slot motion maps decoded from generated videos."""
  span = (NUM_SAMPLES - 1) * STRIDE + 1
  maps = []
  for v in range(num_videos):
    path = synthetic.make_video(tmp / f'video_{v}', codec='h264', num_frames=video_frames,
                                height=SIZE, width=SIZE, num_objects=4, object_size=(32, 64),
                                seed=_SEED.value * 1000 + v).path
    for start in rng.integers(0, video_frames - span + 1, size=windows):
      clip = decode.decode_clip(path, np.arange(start, start + span, STRIDE), motion='mv')
      maps.append(motion_lib.to_token_slots(clip.magnitude, TUBELET))
  return maps


def _time(maps, rng, strategy: str, pool: str, smooth: int, calls: int) -> tuple[float, float]:
  """(wall, cpu) seconds per call of `calls` make_mask calls cycling over the maps."""
  wall, cpu = time.perf_counter(), time.process_time()
  for i in range(calls):
    masking.make_mask(strategy, GRID, _MASK_RATIO.value, rng, motion=maps[i % len(maps)],
                      pool=pool, smooth=smooth)
  return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def main(argv):
  del argv
  small = _SMALL.value
  num_videos, windows = (1, 2) if small else (_NUM_VIDEOS.value, _WINDOWS.value)
  video_frames = 64 if small else _VIDEO_FRAMES.value
  repeats, calls = (3, 40) if small else (_REPEATS.value, _CALLS.value)
  rng = np.random.default_rng(_SEED.value)
  with tempfile.TemporaryDirectory(prefix='mgm_bench_mask_') as tmp:
    start = time.perf_counter()
    maps = _motion_maps(pathlib.Path(tmp), num_videos, video_frames, windows, rng)
    prepare_s = time.perf_counter() - start

  opts = options()
  for _, strategy, pool, smooth in opts:  # warm-up: imports, caches, allocator
    _time(maps, rng, strategy, pool, smooth, 5)
  wall = {name: [] for name, *_ in opts}
  cpu = {name: [] for name, *_ in opts}
  for r in range(repeats):
    k = r % len(opts)
    for name, strategy, pool, smooth in opts[k:] + opts[:k]:
      w, c = _time(maps, rng, strategy, pool, smooth, calls)
      wall[name].append(w)
      cpu[name].append(c)

  rows = [{'option': name, 'strategy': strategy, 'pool': pool, 'smooth': smooth,
           'ms_per_clip': round(1e3 * statistics.median(wall[name]), 4),
           'min_ms_per_clip': round(1e3 * min(wall[name]), 4),
           'cpu_ms_per_clip': round(1e3 * statistics.median(cpu[name]), 4)}
          for name, strategy, pool, smooth in opts]
  print(f'make_mask per clip: grid {GRID}, motion [8, 28, 28] from {len(maps)} decoded windows '
        f'({num_videos} videos, prepared in {prepare_s:.1f} s), ratio {_MASK_RATIO.value}, '
        f'median of {repeats} repeats x {calls} calls; target <= {TARGET_MS} ms\n')
  print('| option | ms/clip | min ms/clip | CPU ms/clip |')
  print('|---|---|---|---|')
  for row in rows:
    print(f'| {row["option"]} | {row["ms_per_clip"]:.4f} | {row["min_ms_per_clip"]:.4f} | '
          f'{row["cpu_ms_per_clip"]:.4f} |')
  print(json.dumps({
      'benchmark': 'mask', 'small': small, 'grid': list(GRID),
      'motion_shape': list(maps[0].shape), 'mask_ratio': _MASK_RATIO.value, 'maps': len(maps),
      'repeats': repeats, 'calls': calls, 'prepare_s': round(prepare_s, 2),
      'target_ms': TARGET_MS, 'rows': rows,
      'ms_per_clip': {row['option']: row['ms_per_clip'] for row in rows},
      'max_ms_per_clip': max(row['ms_per_clip'] for row in rows),
      'max_cpu_ms_per_clip': max(row['cpu_ms_per_clip'] for row in rows),
      'over_target': [row['option'] for row in rows if row['ms_per_clip'] > TARGET_MS]}))


if __name__ == '__main__':
  app.run(main)
