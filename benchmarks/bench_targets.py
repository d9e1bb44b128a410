r"""Host cost per clip of each reconstruction target's inputs, against the pixel-only pipeline.

    python benchmarks/bench_targets.py                  # ~35 s on 2 cores (videos included)
    python benchmarks/bench_targets.py --rounds=9 --clips_per_video=4
    python benchmarks/bench_targets.py --small          # seconds: a smoke run (tests)

Data: --num_videos synthetic videos (`synthetic.make_video`: 5 textured movers over a textured
background, a random camera pan per video) of --video_frames frames at 320x240 (short side 240),
H.264 without B-frames (codec "h264": ref 1, GOP 16), plus --bframes_videos more with x264's
defaults (codec "h264_bframes": B-frames, 3 references).

The per-clip host work is what a pipeline thread does for one record:
`pipeline.LoadClip(spec).random_map({"path": ..., "label": 0}, rng)` (decode + motion vectors +
multi-scale crop to 224 + MGM mask 0.75, plus whatever the targets need), with
`spec = ClipSpec(num_frames=16, stride=S, size=224, mask_strategy="mgm", mask_ratio=0.75,
train=True, <variant>)`. The variants (fields of ClipSpec):

  pixels          defaults: the baseline (VideoMAE's pixel target needs nothing more).
  frame_diff      between_frames=True: the dense frame-difference target (MotionMAE / MAM2)
                  decodes and crops the frames between each tubelet's sampled frames, output
                  "between" uint8 [t, K, S, S, 3], K = (tubelet - 1) x (stride - 1).
  trajectory      trajectory_points=2: each tubelet span's per-frame codec flow and point
                  tracking, output "trajectory" float32 [N, D], "trajectory_valid" float32.
  trajectory_mme  trajectory_points=2, trajectory_steps=4 (MME tracks 4 steps; at stride 4 that
                  is the default span, so the two trajectory rows are the same spec there).
  all             between_frames=True + trajectory_points=2.

Not on the host at all: HOG (MaskFeat / MME's appearance target, `mgm_jax.hog.hog_target`) and
the sampled-only frame difference (`FrameDiffTarget(dense=False)`) are computed on device from
the frames the pixel pipeline already sends: 0 extra host cost and 0 extra bytes (printed as
such). Their device-side cost (and the dense frame difference's device part) is measured here
as a separate small table, one clip per call, jitted, on this machine's JAX backend (on a CPU
this is "device-side cost on CPU", XLA's own threads counted in the CPU column): it says how
much work they are, not what an accelerator takes.

Method: each variant has its own LoadClip, warmed up once on every video (its frame-count cache
filled: later epochs open each file once, so no variant pays the probe). Then --rounds rounds;
in each round every clip (--clips_per_video windows per video, drawn afresh per round) runs
every variant back to back in an order rotated per clip and round, each with an rng seeded the
same way for that clip: the same window and the same crop for every variant. One clip at a time
in this thread (FFmpeg keeps its default slice threading, which does nothing for these
single-slice streams). Per variant: CPU ms per clip (`time.process_time`: every thread of this
process, FFmpeg's and NumPy's included, so it can exceed wall time) and wall ms, medians over rounds; ratio = variant time / pixels time at the same stride (> 1:
dearer), the median over rounds of each round's ratio (the variants of one round ran
interleaved, so a load change hits both sides alike); bytes per clip sent to the device: the sum
of the output arrays' nbytes (frames, mask, label, and the targets' inputs), and its ratio.

Ends with ONE JSON line: for each stride S and variant V, stride{S}_{V}_ratio (CPU),
stride{S}_{V}_wall_ratio, stride{S}_{V}_bytes_ratio and stride{S}_{V}_cpu_ms; plus `rows` (every
number), `device_side` (the on-device targets per clip) and the run's sizes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import pipeline
from input_pipeline import synthetic
from mgm_jax import hog as hog_lib
from mgm_jax import loss as loss_lib
from mgm_jax import model as model_lib
from mgm_jax import targets as targets_lib

_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 4, 'Generated H.264 videos without B-frames.')
_BFRAMES_VIDEOS = flags.DEFINE_integer('bframes_videos', 1, 'Generated videos with B-frames.')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 64, 'Frames per generated video.')
_CLIPS_PER_VIDEO = flags.DEFINE_integer('clips_per_video', 2, 'Windows per video per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (all variants interleaved in each).')
_STRIDES = flags.DEFINE_list('strides', ['2', '4'], 'Temporal strides (K400 uses 4).')
_DEVICE_CALLS = flags.DEFINE_integer('device_calls', 5, 'Timed calls per on-device target.')
_DEVICE_SIDE = flags.DEFINE_bool('device_side', True, 'Time the on-device targets too.')
_SMALL = flags.DEFINE_bool('small', False, 'Tiny videos and clips: a smoke run in seconds.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the videos, windows and crops.')

# Variant -> the ClipSpec fields it sets (the rest: the baseline's).
VARIANTS = {
    'pixels': {},
    'frame_diff': {'between_frames': True},
    'trajectory': {'trajectory_points': 2},
    'trajectory_mme': {'trajectory_points': 2, 'trajectory_steps': 4},
    'all': {'between_frames': True, 'trajectory_points': 2},
}
# Targets computed on device from the frames: no host work, no extra bytes.
DEVICE_ONLY = ('hog', 'frame_diff_sampled')


def _config() -> dict:
  """Sizes: a 16x224 pretraining clip from 320x240 videos, or tiny ones for --small."""
  if _SMALL.value:
    return dict(num_videos=2, bframes_videos=1, video_frames=32, hw=(128, 160), num_frames=8,
                size=112, clips_per_video=1, rounds=2, device_calls=2)
  return dict(num_videos=_NUM_VIDEOS.value, bframes_videos=_BFRAMES_VIDEOS.value,
              video_frames=_VIDEO_FRAMES.value, hw=(240, 320), num_frames=16, size=224,
              clips_per_video=_CLIPS_PER_VIDEO.value, rounds=_ROUNDS.value,
              device_calls=_DEVICE_CALLS.value)


def _specs(cfg: dict, stride: int) -> dict[str, pipeline.ClipSpec]:
  base = pipeline.ClipSpec(num_frames=cfg['num_frames'], stride=stride, size=cfg['size'],
                           mask_strategy='mgm', mask_ratio=0.75, train=True)
  return {name: dataclasses.replace(base, **fields) for name, fields in VARIANTS.items()}


def _make_videos(root: pathlib.Path, cfg: dict) -> list[tuple[str, str]]:
  """(path, codec) of each generated video."""
  height, width = cfg['hw']
  codecs = ['h264'] * cfg['num_videos'] + ['h264_bframes'] * cfg['bframes_videos']
  pans = np.random.default_rng(_SEED.value).uniform(-3, 3, size=(len(codecs), 2))
  out = []
  for i, codec in enumerate(codecs):
    video = synthetic.make_video(
        root / f'v{i:03d}', num_frames=cfg['video_frames'], height=height, width=width,
        num_objects=5, object_size=(height // 6, height // 3), codec=codec,
        camera_pan=tuple(float(p) for p in pans[i]), seed=_SEED.value * 1000 + i)
    out.append((str(video.path), codec))
  return out


def _nbytes(out: dict) -> int:
  """Bytes one element puts on the device: every output array's nbytes."""
  return sum(int(np.asarray(v).nbytes) for v in out.values())


def _load(load: pipeline.LoadClip, path: str, seed) -> dict:
  out = load.random_map({'path': path, 'label': 0}, np.random.default_rng(seed))
  if 'failed' in out:
    raise RuntimeError(f'{path}: {out["failed"]}')
  return out


# --------------------------------------------------------------------------------- host side


def _host_stride(videos: list[tuple[str, str]], cfg: dict, stride: int) -> dict:
  """Per variant: per-round CPU / wall totals, bytes per clip, shapes, trajectory validity."""
  loads = {name: pipeline.LoadClip(spec) for name, spec in _specs(cfg, stride).items()}
  names = list(loads)
  info = {name: {'bytes': None, 'shapes': None, 'valid': []} for name in names}
  for path, _ in videos:  # warm-up: imports, allocator, page cache, frame-count caches
    for name in names:
      _load(loads[name], path, _SEED.value)
  clips = [path for path, _ in videos for _ in range(cfg['clips_per_video'])]
  wall = {n: [] for n in names}
  cpu = {n: [] for n in names}
  for r in range(cfg['rounds']):
    total_wall = dict.fromkeys(names, 0.0)
    total_cpu = dict.fromkeys(names, 0.0)
    for c, path in enumerate(clips):
      seed = [_SEED.value, stride, r, c]  # the same window and crop for every variant
      k = (r + c) % len(names)
      for name in names[k:] + names[:k]:
        w0, c0 = time.perf_counter(), time.process_time()
        out = _load(loads[name], path, seed)
        total_wall[name] += time.perf_counter() - w0
        total_cpu[name] += time.process_time() - c0
        shapes = {key: [list(np.shape(v)), str(np.asarray(v).dtype)] for key, v in out.items()}
        if info[name]['shapes'] is None:
          info[name].update(bytes=_nbytes(out), shapes=shapes)
        elif shapes != info[name]['shapes']:
          raise AssertionError(f'{name}: output shapes changed: {shapes}')
        if 'trajectory_valid' in out:
          info[name]['valid'].append(float(np.mean(out['trajectory_valid'])))
    for name in names:
      wall[name].append(total_wall[name])
      cpu[name].append(total_cpu[name])

  n = len(clips)
  rows = []
  base_bytes = info['pixels']['bytes']
  for name in names:
    row = {
        'stride': stride, 'variant': name,
        'cpu_ms': round(1e3 * statistics.median(cpu[name]) / n, 2),
        'wall_ms': round(1e3 * statistics.median(wall[name]) / n, 2),
        'ratio': round(statistics.median(a / b for a, b in zip(cpu[name], cpu['pixels'])), 4),
        'wall_ratio': round(statistics.median(
            a / b for a, b in zip(wall[name], wall['pixels'])), 4),
        'bytes': info[name]['bytes'],
        'bytes_ratio': info[name]['bytes'] / base_bytes,  # exact: what the shapes imply
        'shapes': info[name]['shapes'],
    }
    row['extra_cpu_ms'] = round(row['cpu_ms'] - rows[0]['cpu_ms'], 2) if rows else 0.0
    if info[name]['valid']:
      row['trajectory_valid_fraction'] = round(statistics.mean(info[name]['valid']), 3)
    rows.append(row)
  return {'clips': n, 'rows': rows}


# ------------------------------------------------------------------------------- device side


def _device_stride(videos: list[tuple[str, str]], cfg: dict, stride: int) -> list[dict]:
  """The on-device targets, one clip per jitted call: pixels (the reference), HOG, and the
  sampled and dense frame differences (from the frames and "between" LoadClip produced)."""
  spec = _specs(cfg, stride)['all']
  out = _load(pipeline.LoadClip(spec), videos[0][0], _SEED.value)
  frames, between = jnp.asarray(out['frames']), jnp.asarray(out['between'])  # batch of 1
  fns = {
      'pixels': lambda b: loss_lib.PixelTarget(tubelet=spec.tubelet, patch=spec.patch)(b),
      'hog': lambda b: hog_lib.hog_target(b['video01'], spec.tubelet, spec.patch),
      'frame_diff_sampled': targets_lib.FrameDiffTarget(
          tubelet=spec.tubelet, patch=spec.patch, stride=stride, dense=False),
      'frame_diff_dense': targets_lib.FrameDiffTarget(
          tubelet=spec.tubelet, patch=spec.patch, stride=stride),
  }
  rows = []
  for name, fn in fns.items():
    def step(frames, between, fn=fn):
      _, video01 = model_lib.normalize(frames)
      return fn({'video01': video01, 'between': between})
    jitted = jax.jit(step)
    t0 = time.perf_counter()
    shape = jitted(frames, between).block_until_ready().shape  # compile + first call
    compile_s = time.perf_counter() - t0
    wall, cpu = [], []
    for _ in range(cfg['device_calls']):
      w0, c0 = time.perf_counter(), time.process_time()
      jitted(frames, between).block_until_ready()
      wall.append(time.perf_counter() - w0)
      cpu.append(time.process_time() - c0)
    rows.append({'stride': stride, 'target': name, 'output': list(shape),
                 'cpu_ms': round(1e3 * statistics.median(cpu), 2),
                 'wall_ms': round(1e3 * statistics.median(wall), 2),
                 'compile_s': round(compile_s, 2)})
  return rows


# -------------------------------------------------------------------------------------- main


def main(argv):
  del argv
  cfg = _config()
  strides = [int(s) for s in _STRIDES.value]
  with tempfile.TemporaryDirectory(prefix='mgm_bench_targets_') as tmp:
    start = time.perf_counter()
    videos = _make_videos(pathlib.Path(tmp), cfg)
    gen_s = time.perf_counter() - start
    host = {s: _host_stride(videos, cfg, s) for s in strides}
    device = ([r for s in strides for r in _device_stride(videos, cfg, s)]
              if _DEVICE_SIDE.value else [])

  result = {
      'benchmark': 'targets', 'small': _SMALL.value, 'cpu_count': os.cpu_count(),
      'videos': len(videos), 'bframes_videos': cfg['bframes_videos'],
      'video_frames': cfg['video_frames'], 'frame_size': list(cfg['hw']),
      'num_frames': cfg['num_frames'], 'size': cfg['size'], 'strides': strides,
      'clips_per_round': host[strides[0]]['clips'], 'rounds': cfg['rounds'],
      'generate_s': round(gen_s, 1),
  }
  for s in strides:
    for row in host[s]['rows']:
      key = f'stride{s}_{row["variant"]}'
      result[f'{key}_ratio'] = row['ratio']
      result[f'{key}_wall_ratio'] = row['wall_ratio']
      result[f'{key}_bytes_ratio'] = row['bytes_ratio']
      result[f'{key}_cpu_ms'] = row['cpu_ms']
  result['device_only_host_extra_cpu_ms'] = dict.fromkeys(DEVICE_ONLY, 0.0)
  result['rows'] = [r for s in strides for r in host[s]['rows']]
  result['device_side'] = {'backend': jax.default_backend(), 'rows': device}
  _print_table(result)
  print(json.dumps(result))


def _print_table(result: dict) -> None:
  h, w = result['frame_size']
  print(f'\n{result["videos"]} videos ({result["bframes_videos"]} with B-frames) x '
        f'{result["video_frames"]} frames, {w}x{h} H.264; clips {result["num_frames"]}x'
        f'{result["size"]}, MGM mask 0.75; {result["clips_per_round"]} clips per round, median '
        f'of {result["rounds"]} interleaved rounds; {result["cpu_count"]} CPUs; one clip at a '
        'time in this thread\n')
  print('host, per clip: LoadClip.random_map (ratio = variant / pixels at the same stride)')
  print(f'{"stride":>6s}  {"variant":20s}{"cpu ms":>8s}{"wall ms":>9s}{"cpu x":>8s}'
        f'{"wall x":>8s}{"extra cpu":>10s}{"MB/clip":>9s}{"bytes x":>9s}{"traj ok":>8s}')
  for s in result['strides']:
    rows = [r for r in result['rows'] if r['stride'] == s]
    for r in rows:
      valid = r.get('trajectory_valid_fraction')
      print(f'{s:6d}  {r["variant"]:20s}{r["cpu_ms"]:8.1f}{r["wall_ms"]:9.1f}{r["ratio"]:8.3f}'
            f'{r["wall_ratio"]:8.3f}{r["extra_cpu_ms"]:10.1f}{r["bytes"] / 1e6:9.3f}'
            f'{r["bytes_ratio"]:9.4f}{"" if valid is None else f"{valid:.2f}":>8s}')
    for name in DEVICE_ONLY:  # computed on device from the frames already sent
      print(f'{s:6d}  {name:20s}{"-":>8s}{"-":>9s}{1.0:8.3f}{1.0:8.3f}{0.0:10.1f}'
            f'{rows[0]["bytes"] / 1e6:9.3f}{1.0:9.4f}  (on device, from the frames)')
  device = result['device_side']
  if device['rows']:
    print(f'\ndevice-side cost on {device["backend"].upper()} (jitted, batch of 1 clip, from '
          'uint8 frames; not an accelerator figure)')
    print(f'{"stride":>6s}  {"target":20s}{"cpu ms":>8s}{"wall ms":>9s}{"compile s":>10s}'
          '  output')
    for r in device['rows']:
      print(f'{r["stride"]:6d}  {r["target"]:20s}{r["cpu_ms"]:8.1f}{r["wall_ms"]:9.1f}'
            f'{r["compile_s"]:10.2f}  {r["output"]}')


if __name__ == '__main__':
  app.run(main)
